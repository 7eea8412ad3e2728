package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/warren-proxy/warren/internal/atomicfile"
	"github.com/warren-proxy/warren/internal/connect"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/sshconfig"
	"github.com/warren-proxy/warren/transport/pki"
)

// runConfig prints (or, with --write, keeps up to date in a file) the
// ssh_config block for stock OpenSSH: the proxy, an entry per region of
// the cluster, and the ssh resources the user may reach behind them; tcp
// resources are listed in comments with the ssh -L and -W lines that
// reach them. With --connect the resources are reached through
// `warren connect` (the nearest ready proxy).
func runConfig(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "ssh" {
		return usageError{"the only config subcommand is ssh: warren config ssh [--write ~/.ssh/config]"}
	}
	fs := newFlags("config ssh", "[--write FILE] [--hosts 'node1 node2'] [--connect [--region R]]")
	cf := addClientFlags(fs)
	hosts := fs.String("hosts", "", "space-separated ssh resources reached through the proxy (default: the ssh resources the proxy lists for you)")
	name := fs.String("proxy-name", "warren-proxy", "the Host name of the proxy entry")
	entry := fs.String("entry-name", "warren", "the `NAME` of the entry through warren connect; the region entries are NAME-REGION")
	useConnect := fs.Bool("connect", false, "reach resources through the nearest ready proxy: entries run warren connect (this binary) as their ProxyCommand")
	region := fs.String("region", "", "with --connect, the `REGION` whose proxies the NAME entry prefers (default: the nearest of any region)")
	write := fs.String("write", "", "update this file in place (e.g. ~/.ssh/config): the Warren block is replaced, never duplicated; run again when resources change")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *region != "" && !*useConnect {
		return usageError{"--region chooses the region the --connect entry prefers: add --connect"}
	}
	for what, v := range map[string]string{"--entry-name": *entry, "--region": *region} {
		if v != "" && !model.ValidName(v) {
			return usageError{fmt.Sprintf("%s %s is not valid: use %s", what, model.Quote(v), model.NameRule)}
		}
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
	if err := addEntries(ctx, cf, &c, entryOptions{name: *entry, connect: *useConnect, region: *region}); err != nil {
		return err
	}
	if *write != "" {
		if err := sshconfig.Update(*write, c); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "updated the Warren block for %s in %s: %d entries, %d ssh resource(s), %d tcp\n", *name, *write, len(c.Proxies), len(c.Hosts), len(c.TCP))
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

// entryOptions are config ssh's flags for the entries beyond the proxy's.
type entryOptions struct {
	name    string // the warren connect entry; regions' are name-region
	connect bool
	region  string
}

// addEntries adds an entry per region of the cluster (the proxies come
// from the proxy's status) to c. Without --connect each reaches the
// region's first proxy by address, for stock OpenSSH alone; with it, each
// runs `warren connect --region R` (the nearest ready proxy of the
// region), and an entry named o.name, which the resources jump through,
// runs `warren connect` over every proxy. The proxies file that warren
// connect reads is written beside the identity, with its state.
func addEntries(ctx context.Context, cf *clientFlags, c *sshconfig.Config, o entryOptions) error {
	var buf strings.Builder
	err := cf.proxyCommand(ctx, "status --json", &buf)
	var members model.Statuses
	if err == nil {
		err = json.Unmarshal([]byte(buf.String()), &members)
	}
	if err != nil {
		if o.connect {
			return fmt.Errorf("list the proxies: %w", err)
		}
		fmt.Fprintf(os.Stderr, "warren config ssh: no region entries (the proxy's status: %v)\n", err)
		return nil
	}
	var cands []connect.Candidate
	for _, m := range members {
		cand := connect.Candidate{ID: m.ID, Region: m.Region, UserAddr: m.UserAddr, HTTPAddr: m.HTTPAddr}
		if connect.CheckAddr("", cand.HTTPAddr) != nil {
			cand.HTTPAddr = "" // not reachable from here: connect measures the user port alone
		}
		if err := cand.Validate(); err != nil {
			fmt.Fprintf(os.Stderr, "warren config ssh: proxy %s left out: %v (set its public_addr)\n", model.Quote(m.ID), err)
			continue
		}
		cands = append(cands, cand)
	}
	if len(cands) == 0 {
		if o.connect {
			return errors.New("no proxy advertises an address users can reach: set public_addr in the proxies' config")
		}
		return nil
	}
	slices.SortFunc(cands, func(a, b connect.Candidate) int { return strings.Compare(a.ID, b.ID) })
	regions := map[string]connect.Candidate{} // the first proxy of each region
	var names []string
	for _, cand := range cands {
		if _, ok := regions[cand.Region]; !ok {
			regions[cand.Region] = cand
			names = append(names, cand.Region)
		}
	}
	if o.region != "" && regions[o.region].ID == "" {
		return fmt.Errorf("no proxy is in region %s; the regions are %s", model.Quote(o.region), strings.Join(names, ", "))
	}
	var command func(region string) string
	if o.connect {
		dir := filepath.Dir(abs(cf.identity))
		proxies := filepath.Join(dir, "proxies")
		if err := atomicfile.Write(proxies, connect.FormatProxies(cands), 0o600); err != nil {
			return err
		}
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary for the ProxyCommand: %w", err)
		}
		command = func(region string) string {
			args := []string{bin, "connect", "--proxies", proxies, "--state", filepath.Join(dir, "connect.state")}
			if region != "" {
				args = append(args, "--region", region)
			}
			return sshconfig.Command(args...)
		}
		c.Proxies = append(c.Proxies, sshconfig.Proxy{Name: o.name, Command: command(o.region), HostKeyAlias: pki.AnyProxyPrincipal})
		c.Jump = o.name
	}
	for _, r := range names {
		e := sshconfig.Proxy{Name: o.name + "-" + r, Addr: regions[r].UserAddr}
		if command != nil {
			e = sshconfig.Proxy{Name: e.Name, Command: command(r), HostKeyAlias: pki.AnyProxyPrincipal}
		}
		c.Proxies = append(c.Proxies, e)
	}
	return nil
}
