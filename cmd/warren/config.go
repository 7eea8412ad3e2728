package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/sshconfig"
)

// runConfig prints (or, with --write, keeps up to date in a file) the
// ssh_config block for stock OpenSSH: the proxy, and the ssh resources the
// user may reach behind it; tcp resources are listed in comments with the
// ssh -L and -W lines that reach them.
func runConfig(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "ssh" {
		return usageError{"the only config subcommand is ssh: warren config ssh [--write ~/.ssh/config]"}
	}
	fs := newFlags("config ssh", "[--write FILE] [--hosts 'node1 node2']")
	cf := addClientFlags(fs)
	hosts := fs.String("hosts", "", "space-separated ssh resources reached through the proxy (default: the ssh resources the proxy lists for you)")
	name := fs.String("proxy-name", "warren-proxy", "the Host name of the proxy entry")
	write := fs.String("write", "", "update this file in place (e.g. ~/.ssh/config): the Warren block is replaced, never duplicated; run again when resources change")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	cr, err := cf.load()
	if err != nil {
		return err
	}
	c := sshconfig.Config{
		Proxies:            []sshconfig.Proxy{{Name: *name, Addr: cf.proxy}},
		User:               cr.user,
		Identity:           abs(cf.identity),
		ResourceKnownHosts: abs(cr.resourceKnownHosts),
		Hosts:              strings.Fields(*hosts),
	}
	kh := cf.knownHosts
	if kh == "" {
		kh = filepath.Join(filepath.Dir(cf.identity), "known_hosts")
	}
	c.KnownHosts = abs(kh)
	if len(cr.cert.ValidPrincipals) > 0 {
		c.Login = cr.cert.ValidPrincipals[0]
	}
	if len(c.Hosts) == 0 {
		var buf strings.Builder
		if err := cf.proxyCommand(ctx, "ls --json", &buf); err != nil {
			return fmt.Errorf("list resources (or pass --hosts): %w", err)
		}
		var list []model.Summary
		if err := json.Unmarshal([]byte(buf.String()), &list); err != nil {
			return fmt.Errorf("read resource list: %w", err)
		}
		for _, s := range list {
			if s.Kind == "ssh" {
				c.Hosts = append(c.Hosts, s.Name)
			} else {
				c.TCP = append(c.TCP, sshconfig.TCP{Name: s.Name, Port: s.Port})
			}
		}
	}
	if *write != "" {
		if err := sshconfig.Update(*write, c); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "updated the Warren block for %s in %s: %d ssh resource(s), %d tcp\n", *name, *write, len(c.Hosts), len(c.TCP))
		return nil
	}
	return sshconfig.Write(os.Stdout, c)
}

// runKnownHosts prints pinned known_hosts lines from the proxy: every
// proxy's plain host key and those of the agents serving the ssh resources
// the user may reach, for SSH clients that cannot trust a host CA.
func runKnownHosts(ctx context.Context, args []string) error {
	fs := newFlags("known-hosts", "[--write FILE]")
	cf := addClientFlags(fs)
	write := fs.String("write", "", "write the lines to this file (replacing it) instead of printing them")
	if err := parse(fs, args); err != nil {
		return err
	}
	var buf strings.Builder
	if err := cf.proxyCommand(ctx, "known-hosts", &buf); err != nil {
		return err
	}
	if *write == "" {
		_, err := os.Stdout.WriteString(buf.String())
		return err
	}
	if err := os.WriteFile(*write, []byte(buf.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", *write, err)
	}
	fmt.Fprintf(os.Stderr, "wrote %d pinned host keys to %s\n", strings.Count(buf.String(), "\n")-2, *write)
	return nil
}
