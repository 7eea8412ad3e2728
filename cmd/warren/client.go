package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/warren-proxy/warren/actors/usercmd"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/pki"
)

// clientFlags are the flags every client command shares. Defaults come
// from WARREN_PROXY, WARREN_IDENTITY and WARREN_KNOWN_HOSTS.
type clientFlags struct {
	proxy, identity, knownHosts string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	c := &clientFlags{}
	fs.StringVar(&c.proxy, "proxy", envOr("WARREN_PROXY", "localhost:3023"), "proxy user address host:port (env WARREN_PROXY)")
	fs.StringVar(&c.identity, "i", os.Getenv("WARREN_IDENTITY"), "the `KEY` file from warren user add; its certificate is KEY-cert.pub (env WARREN_IDENTITY)")
	fs.StringVar(&c.knownHosts, "known-hosts", os.Getenv("WARREN_KNOWN_HOSTS"), "known_hosts with the cluster host CA (default: known_hosts beside the key; env WARREN_KNOWN_HOSTS)")
	return c
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// creds is a loaded user identity.
type creds struct {
	signer ssh.Signer
	cert   *ssh.Certificate
	user   string
	// hosts checks proxies (the proxy host CA), resourceHosts resources
	// (the agent host CA): never one CA for the other's hosts.
	hosts, resourceHosts ssh.HostKeyCallback
	resourceKnownHosts   string
}

func (c *clientFlags) load() (*creds, error) {
	if c.identity == "" {
		return nil, usageError{"no identity: pass -i KEY (from `warren user add`) or set WARREN_IDENTITY"}
	}
	keyPEM, err := os.ReadFile(c.identity)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	key, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse identity %s: %w", c.identity, err)
	}
	certText, err := os.ReadFile(c.identity + "-cert.pub")
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s-cert.pub: %w", c.identity, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s-cert.pub is not a certificate", c.identity)
	}
	if err := pki.CheckValidity(cert, time.Time{}); errors.Is(err, pki.ErrExpired) {
		return nil, fmt.Errorf("your %w; get a new one with `warren user add`", err)
	}
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, err
	}
	kh := c.knownHosts
	if kh == "" {
		kh = filepath.Join(filepath.Dir(c.identity), "known_hosts")
	}
	hosts, err := hostKeyCallback(kh)
	if err != nil {
		return nil, err
	}
	rkh := filepath.Join(filepath.Dir(kh), pki.ResourceKnownHostsFile)
	resourceHosts, err := hostKeyCallback(rkh)
	if err != nil {
		return nil, err
	}
	user, _ := pki.UserFromCert(cert)
	return &creds{signer: signer, cert: cert, user: user, hosts: hosts, resourceHosts: resourceHosts, resourceKnownHosts: rkh}, nil
}

// hostKeyCallback trusts host certificates from the @cert-authority keys
// in a known_hosts file whatever the port (Go's knownhosts matches ports
// exactly, OpenSSH's `*` does not), and plain keys as known_hosts says.
func hostKeyCallback(path string) (ssh.HostKeyCallback, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (it comes with `warren user add`)", path, err)
	}
	var cas []ssh.PublicKey
	for rest := data; len(rest) > 0; {
		marker, _, key, _, next, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			break
		}
		if marker == "cert-authority" {
			cas = append(cas, key)
		}
		rest = next
	}
	plain, err := knownhosts.New(path)
	if err != nil {
		return nil, fmt.Errorf("read known_hosts %s: %w", path, err)
	}
	return pki.HostKeyCallback(cas, nil, plain), nil
}

// dialProxy connects to the proxy's user port.
func (c *clientFlags) dialProxy(ctx context.Context) (*ssh.Client, *creds, error) {
	cr, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	cfg := &ssh.ClientConfig{
		User:            cr.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cr.signer)},
		HostKeyCallback: cr.hosts,
		Timeout:         15 * time.Second,
		BannerCallback:  func(msg string) error { fmt.Fprint(os.Stderr, msg); return nil },
	}
	client, err := ssh.Dial("tcp", c.proxy, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to proxy %s: %w", c.proxy, err)
	}
	return client, cr, nil
}

// proxyCommand runs a proxy command (ls, audit, …) and copies its output.
func (c *clientFlags) proxyCommand(ctx context.Context, cmd string, stdout io.Writer) error {
	return c.proxyCommandInput(ctx, cmd, nil, stdout)
}

// proxyCommandInput is proxyCommand with data for the command's stdin.
func (c *clientFlags) proxyCommandInput(ctx context.Context, cmd string, stdin io.Reader, stdout io.Writer) error {
	client, _, err := c.dialProxy(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, os.Stderr
	return exitStatus(sess.Run(cmd))
}

func runResource(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"resource needs a subcommand: create -f FILE, rm NAME, ls"}
	}
	fs := newFlags("resource "+args[0], subSynopsis("resource", args[0]))
	cf := addClientFlags(fs)
	file := fs.String("f", "", "resource definition (YAML: name, kind, addr, labels, selector); - for stdin")
	asJSON := fs.Bool("json", false, "print JSON (ls)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "create":
		if *file == "" {
			return usageError{"create needs -f FILE"}
		}
		var in io.Reader = os.Stdin
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		return cf.proxyCommandInput(ctx, "resource create", in, os.Stdout)
	case "rm":
		if fs.NArg() != 1 {
			return usageError{"rm needs exactly one NAME"}
		}
		return cf.proxyCommand(ctx, "resource rm "+fs.Arg(0), os.Stdout)
	case "ls":
		cmd := "resource ls"
		if *asJSON {
			cmd += " --json"
		}
		return cf.proxyCommand(ctx, cmd, os.Stdout)
	}
	return usageError{fmt.Sprintf("unknown resource subcommand %q: use create, rm or ls", args[0])}
}

func exitStatus(err error) error {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return exitError(ee.ExitStatus())
	}
	return err
}

func runLs(ctx context.Context, args []string) error {
	fs := newFlags("ls", "[--json]")
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	cmd := "ls"
	if *asJSON {
		cmd += " --json"
	}
	return cf.proxyCommand(ctx, cmd, os.Stdout)
}

func runStatus(ctx context.Context, args []string) error {
	fs := newFlags("status", "[--json]")
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	cmd := "status"
	if *asJSON {
		cmd += " --json"
	}
	return cf.proxyCommand(ctx, cmd, os.Stdout)
}

func runAudit(ctx context.Context, args []string) error {
	fs := newFlags("audit", "[--since 1h] [--limit N] [--user U] [--resource R] [--local] [--json]")
	cf := addClientFlags(fs)
	since := fs.Duration("since", time.Hour, "how far back")
	limit := fs.Int("limit", 1000, "at most this many events, the newest first")
	user := fs.String("user", "", "only this user's events")
	resource := fs.String("resource", "", "only this resource's events")
	local := fs.Bool("local", false, "only the log of the proxy asked (default: every proxy of the cluster)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	file := fs.String("file", "", "read a stopped proxy's audit.db directly instead of asking the proxy")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file != "" {
		l, err := audit.Open(*file, audit.Options{})
		if err != nil {
			return err
		}
		defer l.Close()
		res, err := l.Query(audit.Query{Since: time.Now().Add(-*since), User: *user, Resource: *resource, Limit: *limit})
		if err != nil {
			return err
		}
		usercmd.WriteAudit(os.Stdout, res.Events, *asJSON)
		usercmd.WriteAuditNotes(os.Stderr, res)
		return nil
	}
	cmd := fmt.Sprintf("audit --since %s --limit %d", *since, *limit)
	for _, f := range []struct{ name, v string }{{"user", *user}, {"resource", *resource}} {
		if f.v == "" {
			continue
		}
		if strings.ContainsFunc(f.v, func(r rune) bool { return r <= ' ' || r == '\'' || r == '"' }) {
			return usageError{fmt.Sprintf("--%s %q: names hold no spaces or quotes", f.name, f.v)}
		}
		cmd += " --" + f.name + " " + f.v
	}
	if *local {
		cmd += " --local"
	}
	if *asJSON {
		cmd += " --json"
	}
	return cf.proxyCommand(ctx, cmd, os.Stdout)
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
