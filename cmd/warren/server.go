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
	fs := newFlags("init", "--data-dir DIR")
	dir := fs.String("data-dir", defaultDataDir, "directory for the cluster identity")
	name := fs.String("cluster", pki.DefaultClusterName, "cluster name")
	if err := parse(fs, args); err != nil {
		return err
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
	fmt.Printf("  host CA pin (agents' ca_pin): %s\n", pki.Fingerprint(a.HostCA.PublicKey()))
	fmt.Printf("  join tokens are in %s\n", filepath.Join(*dir, "join_tokens"))
	if len(toks) > 0 {
		fmt.Printf("  (%d token%s; keep them secret)\n", len(toks), plural(len(toks)))
	}
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
		return usageError{"the only user subcommand is add: warren user add NAME --logins root,ubuntu"}
	}
	fs := newFlags("user add", "NAME --logins L1,L2 [--roles R1,R2] [--ttl 12h] --out DIR")
	dir := fs.String("data-dir", defaultDataDir, "directory of the cluster identity (from `warren init`)")
	logins := fs.String("logins", "", "comma-separated logins the user may use on nodes (required)")
	roles := fs.String("roles", "", "comma-separated roles (admin may read the audit log)")
	ttl := fs.Duration("ttl", 12*time.Hour, "certificate validity")
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
	a, err := pki.Load(*dir)
	if err != nil {
		return err
	}
	paths, err := issueUser(a, name, splitList(*logins), splitList(*roles), *ttl, *out)
	if err != nil {
		return err
	}
	fmt.Printf("Wrote %s (key), %s-cert.pub (certificate, valid %s) and %s\n", paths.key, paths.key, *ttl, paths.knownHosts)
	return nil
}

type userPaths struct{ key, knownHosts string }

// issueUser writes a user's key, certificate and the known_hosts line that
// trusts the cluster's host CA.
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
	kh := filepath.Join(out, "known_hosts")
	line := pki.KnownHostsLine(a.HostCA.PublicKey(), "*") + "\n"
	if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
		return userPaths{}, fmt.Errorf("write known_hosts: %w", err)
	}
	return userPaths{key: key, knownHosts: kh}, nil
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
