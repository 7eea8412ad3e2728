package pki

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const sshKeygen = "/usr/bin/ssh-keygen"

func needBinary(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not available: %v", path, err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// issueUserFiles makes a key and a certificate for alice and writes them.
func issueUserFiles(t *testing.T, a *Authority, outDir string) (keyPath string, signer ssh.Signer, cert *ssh.Certificate) {
	t.Helper()
	signer, keyPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err = a.IssueUserCert(signer.PublicKey(), UserCertRequest{
		User: "alice", Logins: []string{"alice", "deploy"}, Roles: []string{"dev"}, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	keyPath, err = WriteUserFiles(outDir, "warren-alice", keyPEM, cert)
	if err != nil {
		t.Fatalf("WriteUserFiles: %v", err)
	}
	return keyPath, signer, cert
}

func TestWriteUserFilesLoadWithOpenSSH(t *testing.T) {
	needBinary(t, sshKeygen)
	a := newTestAuthority(t)
	outDir := filepath.Join(t.TempDir(), "keys")
	keyPath, signer, _ := issueUserFiles(t, a, outDir)
	if want := filepath.Join(outDir, "warren-alice"); keyPath != want {
		t.Errorf("key path: got %q, want %q", keyPath, want)
	}

	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{outDir, 0o700},
		{keyPath, 0o600},
		{keyPath + ".pub", 0o644},
		{keyPath + "-cert.pub", 0o644},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != f.mode {
			t.Errorf("%s: got mode %04o, want %04o", f.path, got, f.mode)
		}
	}

	// ssh-keygen -y refuses a private key others may read, so this checks
	// the mode as OpenSSH sees it, and the key itself.
	derived := run(t, sshKeygen, "-y", "-f", keyPath)
	if got, want := fields2(derived), fields2(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); got != want {
		t.Errorf("ssh-keygen -y: got %q, want %q", got, want)
	}
	pubFile, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fields2(string(pubFile)), fields2(derived); got != want {
		t.Errorf("%s.pub: got %q, want %q", keyPath, got, want)
	}

	out := run(t, sshKeygen, "-L", "-f", keyPath+"-cert.pub")
	for _, want := range []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		`Key ID: "alice"`,
		"Signing CA: ED25519 " + Fingerprint(a.UserCA.PublicKey()),
		"Principals: \n                alice\n                deploy\n",
		"Critical Options: (none)",
		"permit-pty",
		"permit-port-forwarding",
		"permit-agent-forwarding",
		"permit-X11-forwarding",
		"permit-user-rc",
		"warren-user@warren.dev",
		"warren-roles@warren.dev",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh-keygen -L: got\n%s\nwant it to contain %q", out, want)
		}
	}

	// Renewal replaces the files in place.
	issueUserFiles(t, a, outDir)
	entries, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("after renewal: got %d files, want 3", len(entries))
	}
}

// fields2 returns the key type and blob of an authorized_keys line.
func fields2(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[0] + " " + f[1]
}

func TestWriteUserFilesRefuses(t *testing.T) {
	a := newTestAuthority(t)
	signer, keyPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, otherPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := a.IssueUserCert(signer.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		keyName string
		keyPEM  []byte
		cert    *ssh.Certificate
		want    string
	}{
		{"empty name", "", keyPEM, cert, "is not a plain file name"},
		{"path", "../x", keyPEM, cert, "is not a plain file name"},
		{"option-like", "-oProxyCommand=x", keyPEM, cert, "is not a plain file name"},
		{"no cert", "k", keyPEM, nil, "no certificate"},
		{"bad key", "k", []byte("nope"), cert, "parse private key"},
		{"other key", "k", otherPEM, cert, "the certificate is for another key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := WriteUserFiles(dir, tt.keyName, tt.keyPEM, tt.cert)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
			if got := listDir(t, dir); got != "[]" {
				t.Errorf("got files %s written, want none", got)
			}
		})
	}
}

func TestKnownHostsLineAndFingerprint(t *testing.T) {
	a := newTestAuthority(t)
	hostCA := a.HostCA.PublicKey()
	blob := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostCA)))
	tests := []struct {
		pattern, want string
	}{
		{"*.example.com", "@cert-authority *.example.com " + blob + " warren host CA"},
		{"", "@cert-authority * " + blob + " warren host CA"},
	}
	for _, tt := range tests {
		if got := KnownHostsLine(hostCA, tt.pattern); got != tt.want {
			t.Errorf("KnownHostsLine(%q): got %q, want %q", tt.pattern, got, tt.want)
		}
	}
	if !strings.HasPrefix(blob, "ssh-ed25519 AAAA") {
		t.Errorf("host CA key: got %q, want an ssh-ed25519 key", blob)
	}

	needBinary(t, sshKeygen)
	out := run(t, sshKeygen, "-l", "-f", filepath.Join(a.Dir, FileHostCAPub))
	if fp := Fingerprint(hostCA); !strings.HasPrefix(fp, "SHA256:") || !strings.Contains(out, " "+fp+" ") {
		t.Errorf("Fingerprint: got %q, want the one ssh-keygen -l prints: %q", fp, out)
	}
	if got := Fingerprint(nil); got != "" {
		t.Errorf("Fingerprint(nil): got %q, want empty", got)
	}
}

// TestOpenSSHClient runs the stock ssh client with the files WriteUserFiles
// wrote against a server that presents a host certificate and checks user
// certificates with CheckUserCert: the whole identity chain as users see it.
func TestOpenSSHClient(t *testing.T) {
	const sshBin = "/usr/bin/ssh"
	needBinary(t, sshBin)
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	home := t.TempDir()
	keyPath, _, _ := issueUserFiles(t, a, filepath.Join(home, ".warren"))

	addr := startSSHServer(t, a)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ca      ssh.PublicKey // the host CA the client trusts
		login   string
		wantOut string
		wantErr string // in ssh's stderr; empty means ssh must succeed
	}{
		{"login allowed", a.HostCA.PublicKey(), "deploy", "alice deploy\n", ""},
		{"login not in certificate", a.HostCA.PublicKey(), "root", "", "Permission denied (publickey)"},
		{"client trusts another host CA", foreign.HostCA.PublicKey(), "alice", "", "Host key verification failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			knownHosts := filepath.Join(t.TempDir(), "known_hosts")
			writeFile(t, knownHosts, KnownHostsLine(tt.ca, "[127.0.0.1]:*")+"\n", 0o644)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null",
				"-i", keyPath,
				"-o", "IdentitiesOnly=yes",
				"-o", "BatchMode=yes",
				"-o", "StrictHostKeyChecking=yes",
				"-o", "UserKnownHostsFile="+knownHosts,
				"-o", "GlobalKnownHostsFile=/dev/null",
				"-o", "ConnectTimeout=10",
				"-p", port,
				tt.login+"@127.0.0.1", "whoami")
			cmd.Env = append(os.Environ(), "HOME="+home)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(stderr.String(), tt.wantErr) {
					t.Fatalf("got error %v, stderr %q, want a failure with %q", err, stderr.String(), tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ssh: %v\n%s", err, stderr.String())
			}
			if got := stdout.String(); got != tt.wantOut {
				t.Errorf("got output %q, want %q", got, tt.wantOut)
			}
		})
	}
}

// startSSHServer serves SSH on 127.0.0.1 with a host certificate valid for
// "127.0.0.1". Every exec request answers "<warren user> <login>".
func startSSHServer(t *testing.T, a *Authority) string {
	t.Helper()
	hostKey := newKey(t)
	hostCert, err := a.IssueHostCert(hostKey.PublicKey(), HostCertRequest{ID: "node1", Principals: []string{"127.0.0.1"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewCertSigner(hostCert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	userCAs := []ssh.PublicKey{a.UserCA.PublicKey()}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			cert, err := CheckUserCert(key, CertOptions{Authorities: userCAs})
			if err != nil {
				return nil, err
			}
			if !slices.Contains(cert.ValidPrincipals, conn.User()) {
				return nil, fmt.Errorf("certificate is not valid for login %q", conn.User())
			}
			user, _ := UserFromCert(cert)
			return &ssh.Permissions{Extensions: map[string]string{ExtUser: user}}, nil
		},
	}
	cfg.AddHostKey(hostSigner)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serveSSHConn(c, cfg)
			})
		}
	})
	return ln.Addr().String()
}

func serveSSHConn(c net.Conn, cfg *ssh.ServerConfig) {
	sconn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer sconn.Close() // ends DiscardRequests, before bg.Wait
	bg.Go(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		for req := range chReqs {
			if req.Type != "exec" {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			_, _ = io.WriteString(ch, sconn.Permissions.Extensions[ExtUser]+" "+sconn.User()+"\n")
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
			_ = ch.Close()
		}
	}
}

// TestWriteKnownHosts checks that each of the two files trusts its CA and
// only it: the proxies' file accepts a proxy and refuses an agent that
// holds the proxy's name, and the resources' file the other way round.
func TestWriteKnownHosts(t *testing.T) {
	a := newTestAuthority(t)
	dir := t.TempDir()
	proxies, resources, err := WriteKnownHosts(dir, a.HostCA.PublicKey(), a.AgentCA.PublicKey())
	if err != nil {
		t.Fatalf("WriteKnownHosts: %v", err)
	}
	if want := filepath.Join(dir, ProxyKnownHostsFile); proxies != want {
		t.Errorf("proxies file: got %q, want %q", proxies, want)
	}
	if want := filepath.Join(dir, ResourceKnownHostsFile); resources != want {
		t.Errorf("resources file: got %q, want %q", resources, want)
	}
	if got := listDir(t, dir); got != "[known_hosts known_hosts_resources]" {
		t.Errorf("got files %s, want the two known_hosts files only", got)
	}

	for _, f := range []struct {
		path string
		ca   ssh.PublicKey
	}{{proxies, a.HostCA.PublicKey()}, {resources, a.AgentCA.PublicKey()}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(f.path); err != nil {
			t.Error(err)
		} else if got := fi.Mode().Perm(); got != 0o644 {
			t.Errorf("%s: got mode %04o, want 0644", f.path, got)
		}
		if n := strings.Count(string(data), "\n"); n != 1 || !strings.HasSuffix(string(data), "\n") {
			t.Errorf("%s: got %q, want one line", f.path, data)
		}
		marker, hosts, key, _, rest, err := ssh.ParseKnownHosts(data)
		if err != nil {
			t.Fatalf("%s: ParseKnownHosts: %v", f.path, err)
		}
		if marker != "cert-authority" || !slices.Equal(hosts, []string{"*"}) || !sameKey(key, f.ca) || len(rest) != 0 {
			t.Errorf("%s: got marker %q hosts %q key %s (%d bytes more), want one @cert-authority * line for %s",
				f.path, marker, hosts, Fingerprint(key), len(rest), Fingerprint(f.ca))
		}
	}

	// As an SSH client checks hosts with them.
	key := newKey(t)
	proxyCert, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "proxy-1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// An agent granted the names of a proxy and a resource.
	agentCert, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{ID: "agent-1", Names: []string{"proxy-1", "web"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	proxiesCB, err := knownhosts.New(proxies)
	if err != nil {
		t.Fatal(err)
	}
	resourcesCB, err := knownhosts.New(resources)
	if err != nil {
		t.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}
	tests := []struct {
		name string
		cb   ssh.HostKeyCallback
		host string
		key  ssh.PublicKey
		ok   bool
	}{
		{"proxies file, proxy", proxiesCB, "proxy-1:22", proxyCert, true},
		{"proxies file, agent with the proxy's name", proxiesCB, "proxy-1:22", agentCert, false},
		{"resources file, resource", resourcesCB, "web:22", agentCert, true},
		{"resources file, proxy", resourcesCB, "proxy-1:22", proxyCert, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cb(tt.host, remote, tt.key)
			if got := err == nil; got != tt.ok {
				t.Errorf("host key check of %s: got error %v, want ok %v", tt.host, err, tt.ok)
			}
		})
	}
}
