package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/pki"
)

const defaultDataDir = "/var/lib/warren"

func runInit(ctx context.Context, args []string) error {
	fs := newFlags("init", "--data-dir DIR [--upgrade]")
	dir := fs.String("data-dir", defaultDataDir, "directory for the cluster identity")
	name := fs.String("cluster", pki.DefaultClusterName, "cluster name")
	upgrade := fs.Bool("upgrade", false, "add to an existing identity what this version needs (the agent CA); every agent must join again")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *upgrade {
		added, err := pki.Upgrade(*dir)
		if err != nil {
			return err
		}
		if len(added) == 0 {
			fmt.Printf("%s needs no upgrade\n", *dir)
			return nil
		}
		fmt.Printf("Added %s to %s. Copy the directory to every proxy, restart them, and join every agent again (agents' certificates now come from the agent CA).\n", strings.Join(added, ", "), *dir)
		return nil
	}
	a, err := pki.Init(*dir, pki.InitOptions{ClusterName: *name})
	if err != nil {
		return err
	}
	toks, err := a.JoinTokens()
	if err != nil {
		return err
	}
	fmt.Printf("Cluster identity written to %s\n", *dir)
	fmt.Printf("  proxy host CA pin (agents' ca_pin): %s\n", pki.Fingerprint(a.HostCA.PublicKey()))
	fmt.Printf("  static join tokens are in %s", filepath.Join(*dir, "join_tokens"))
	if len(toks) > 0 {
		fmt.Printf(" (%d; keep them secret)", len(toks))
	}
	fmt.Printf("\n  prefer short-lived tokens with a grant: `warren token add --ttl 30m --resources 'web-*'`\n")
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func runUser(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "add" {
		return usageError{"the only user subcommand is add: warren user add NAME --logins root,ubuntu --roles access"}
	}
	fs := newFlags("user add", "NAME --logins L1,L2 --roles R1,R2 [--ttl 8h] --out DIR")
	dir := fs.String("data-dir", defaultDataDir, "directory of the cluster identity (from `warren init`)")
	logins := fs.String("logins", "", "comma-separated logins the user may use on nodes (required)")
	roles := fs.String("roles", "", "comma-separated roles (required): presets admin, access, auditor, or roles made with `warren role create`")
	ttl := fs.Duration("ttl", 8*time.Hour, "certificate validity (at most 720h; a role's max_cert_ttl may be shorter)")
	out := fs.String("out", ".", "directory to write the key, certificate and known_hosts to")
	// Accept NAME before or after the flags.
	rest := args[1:]
	var name string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return usageError{"missing NAME"}
	}
	if *roles == "" {
		return usageError{"missing --roles: a user without a role reaches nothing (presets: admin, access, auditor)"}
	}
	a, err := pki.Load(*dir)
	if err != nil {
		return err
	}
	paths, err := issueUser(a, name, splitList(*logins), splitList(*roles), *ttl, *out)
	if err != nil {
		return err
	}
	fmt.Printf("Wrote %s (key), %s-cert.pub (certificate, valid %s, roles %s), %s and %s\n", paths.key, paths.key, *ttl, *roles, paths.knownHosts, paths.resourceKnownHosts)
	return nil
}

type userPaths struct{ key, knownHosts, resourceKnownHosts string }

// issueUser writes a user's key, certificate and the known_hosts files
// that trust the cluster's proxy and agent host CAs.
func issueUser(a *pki.Authority, name string, logins, roles []string, ttl time.Duration, out string) (userPaths, error) {
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return userPaths{}, err
	}
	cert, err := a.IssueUserCert(signer.PublicKey(), pki.UserCertRequest{User: name, Logins: logins, Roles: roles, TTL: ttl, Now: time.Now()})
	if err != nil {
		return userPaths{}, err
	}
	key, err := pki.WriteUserFiles(out, name, keyPEM, cert)
	if err != nil {
		return userPaths{}, err
	}
	kh, rkh, err := pki.WriteKnownHosts(out, a.HostCA.PublicKey(), a.AgentCA.PublicKey())
	if err != nil {
		return userPaths{}, err
	}
	return userPaths{key: key, knownHosts: kh, resourceKnownHosts: rkh}, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func runProxy(ctx context.Context, args []string) error {
	fs := newFlags("proxy", "--config proxy.yaml")
	path := fs.String("config", "/etc/warren/proxy.yaml", "proxy config file")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := proxy.LoadConfig(*path)
	if err != nil {
		return err
	}
	cfg.Logger = logger()
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	cfg.Logger.Info("shutting down")
	return p.Close()
}

func runAgent(ctx context.Context, args []string) error {
	fs := newFlags("agent", "--config agent.yaml")
	path := fs.String("config", "/etc/warren/agent.yaml", "agent config file")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	cfg.Logger = logger()
	cfg.SFTPCommand = sftpCommand()
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	cfg.Logger.Info("shutting down")
	return a.Close()
}

// sftpCommand runs this binary's sftp-server as the login user.
func sftpCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, "sftp-server"}
}

func runSFTPServer(ctx context.Context, args []string) error {
	if err := nodessh.ServeSFTP(stdio{}); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { return os.Stdout.Close() }

func runVersion(ctx context.Context, args []string) error {
	fmt.Println("warren", proxy.Version)
	return nil
}
