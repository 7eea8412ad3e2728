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
	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/pki"
)

// defaultAuthDir is where `warren init` writes the cluster identity and
// where `warren user add` reads it: the proxies' auth_dir in deploy/.
const defaultAuthDir = "/var/lib/warren/auth"

func runInit(ctx context.Context, args []string) error {
	fs := newFlags("init", "--data-dir DIR [--upgrade]")
	dir := fs.String("data-dir", defaultAuthDir, "directory to write the cluster identity to (the proxies' auth_dir)")
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

func runUser(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "add" {
		return usageError{"the only user subcommand is add: `warren user add NAME --logins root,ubuntu --roles access`"}
	}
	fs := newFlags("user add", "NAME --logins L1,L2 --roles R1,R2 [--ttl 8h] [--data-dir DIR] [--out DIR]")
	dir := fs.String("data-dir", defaultAuthDir, "directory of the cluster identity, as warren init wrote it (the proxies' auth_dir)")
	logins := fs.String("logins", "", "comma-separated logins the user may use on nodes (required)")
	roles := fs.String("roles", "", "comma-separated roles (required): presets admin, access, auditor, or roles made with warren role create")
	ttl := fs.Duration("ttl", 8*time.Hour, "certificate validity (at most 720h; a role's max_cert_ttl may be shorter)")
	out := fs.String("out", ".", "directory to write the key, certificate and known_hosts to")
	keyType := fs.String("key-type", pki.KeyEd25519, "the user's key: ed25519, or ecdsa (P-256) for clients that cannot sign with an ed25519 certificate (libssh2, curl)")
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
	a, err := loadAuthority(*dir)
	if err != nil {
		return err
	}
	if *keyType != pki.KeyEd25519 && *keyType != pki.KeyECDSA {
		return usageError{fmt.Sprintf("--key-type %q: use ed25519 or ecdsa", *keyType)}
	}
	paths, err := issueUser(a, name, splitList(*logins), splitList(*roles), *ttl, *out, *keyType)
	if err != nil {
		return err
	}
	fmt.Printf("Wrote %s (key), %s-cert.pub (certificate, valid %s, roles %s), %s and %s\n", paths.key, paths.key, *ttl, *roles, paths.knownHosts, paths.resourceKnownHosts)
	return nil
}

// loadAuthority loads the cluster identity for a command that uses it. A
// missing one is never a reason to run `warren init` here: that would make
// a second cluster whose certificates no proxy trusts.
func loadAuthority(dir string) (*pki.Authority, error) {
	a, err := pki.Load(dir)
	switch {
	case err == nil:
		return a, nil
	case errors.Is(err, os.ErrNotExist):
		files := []string{pki.FileUserCA, pki.FileHostCA, pki.FileAgentCA, pki.FileTLSCAKey, pki.FileTLSCACert, pki.FileJoinTokens, pki.FileAPIToken}
		var missing []string
		for _, f := range files {
			if _, serr := os.Stat(filepath.Join(dir, f)); serr != nil {
				missing = append(missing, f)
			}
		}
		if len(missing) < len(files) {
			return nil, fmt.Errorf("the cluster identity in %s is incomplete (no %s): restore it from a backup or another proxy's auth_dir", dir, strings.Join(missing, ", "))
		}
		return nil, fmt.Errorf("no cluster identity in %s: pass --data-dir with the directory warren init wrote (the proxies' auth_dir)", dir)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("cannot read the cluster identity in %s (permission denied): run as the user that owns it (the proxy's user, or root)", dir)
	}
	return nil, err
}

type userPaths struct{ key, knownHosts, resourceKnownHosts string }

// issueUser writes a user's key, certificate and the known_hosts files
// that trust the cluster's proxy and agent host CAs.
func issueUser(a *pki.Authority, name string, logins, roles []string, ttl time.Duration, out, keyType string) (userPaths, error) {
	signer, keyPEM, err := pki.GenerateKeyType(keyType)
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
	if len(args) > 0 && args[0] == "drain" {
		return runProxyDrain(ctx, args[1:])
	}
	fs := newFlags("proxy", "--config proxy.yaml")
	path := fs.String("config", "/etc/warren/proxy.yaml", "proxy config file")
	lo := addLogFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := lo.check(); err != nil {
		return err
	}
	cfg, err := proxy.LoadConfig(*path)
	if err != nil {
		return err
	}
	log, level, err := lo.build(cfg.Log)
	if err != nil {
		return err
	}
	cfg.Logger = log
	stop := reloadOnHUP(log, func() (conf.Log, any, error) {
		c, err := proxy.LoadConfig(*path)
		if err == nil {
			_, err = c.CheckAndSetDefaults()
		}
		return c.Log, c, err
	}, cfg, lo, level)
	defer stop()
	return proxy.Run(ctx, cfg)
}

// runProxyDrain asks a running proxy to drain and stop (the admin command
// `drain` it runs on itself).
func runProxyDrain(ctx context.Context, args []string) error {
	fs := newFlags("proxy drain", "[--proxy HOST:PORT]")
	cf := addClientFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"proxy drain takes flags only"}
	}
	return cf.proxyCommand(ctx, "drain", os.Stdout)
}

func runAgent(ctx context.Context, args []string) error {
	fs := newFlags("agent", "--config agent.yaml")
	path := fs.String("config", "/etc/warren/agent.yaml", "agent config file")
	lo := addLogFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := lo.check(); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	log, level, err := lo.build(cfg.Log)
	if err != nil {
		return err
	}
	cfg.Logger = log
	stop := reloadOnHUP(log, func() (conf.Log, any, error) {
		c, err := agent.LoadConfig(*path)
		if err == nil {
			_, err = c.CheckAndSetDefaults()
		}
		return c.Log, c, err
	}, cfg, lo, level)
	defer stop()
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
	fs := newFlags("sftp-server", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"sftp-server takes no arguments: it serves SFTP on stdin and stdout"}
	}
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
	fs := newFlags("version", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"version takes no arguments"}
	}
	fmt.Println("warren", proxy.Version)
	return nil
}
