package main

// The client suite: stock SSH clients other than the OpenSSH command line
// (paramiko, PuTTY's tools, libssh2 through curl, sshfs, ansible), and
// OpenSSH's own file tools, each against a real proxy and agent, each
// with strict host key checking. README's "SSH clients" table claims only
// what these tests show.
//
// A test whose client is missing is skipped, unless
// WARREN_REQUIRE_CLIENTS is set (.ci/run sets it and installs them): then
// it fails.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/transport/pki"
)

// clientTimeout bounds every client command of the suite.
const clientTimeout = 90 * time.Second

// missingClient skips t, or fails it when WARREN_REQUIRE_CLIENTS is set.
func missingClient(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("WARREN_REQUIRE_CLIENTS") != "" {
		t.Fatalf("%s (WARREN_REQUIRE_CLIENTS is set; .ci/run installs the clients)", msg)
	}
	t.Skip(msg)
}

// needClients checks that every program is on PATH; pkg is the Debian
// package that has them.
func needClients(t *testing.T, pkg string, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missingClient(t, "%s is not installed: apt-get install %s", p, pkg)
		}
	}
}

// clientResult is what a client command did.
type clientResult struct {
	stdout, stderr string
	code           int
}

func (r clientResult) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// clientCmd describes one client command: its environment (added to the
// test's), working directory and stdin.
type clientCmd struct {
	env   []string
	dir   string
	stdin string
}

// run runs name with args for at most clientTimeout, in its own process
// group: a client's helpers (PuTTY's proxy command, ssh under sshfs or
// ansible) are killed with it if it overruns, which fails the test.
func (o clientCmd) run(t *testing.T, name string, args ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir = o.dir
	cmd.Stdin = strings.NewReader(o.stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := clientResult{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %s\n%s", name, strings.Join(args, " "), clientTimeout, res)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

// ok runs a command and fails the test unless it exits 0.
func (o clientCmd) ok(t *testing.T, name string, args ...string) string {
	t.Helper()
	res := o.run(t, name, args...)
	if res.code != 0 {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), res)
	}
	return res.stdout
}

// background is a long-running client process started by a test (an ssh
// forward, sshfs), stopped by its PID in the test's cleanup.
type background struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

func startBackground(t *testing.T, name string, args ...string) *background {
	t.Helper()
	b := &background{cmd: exec.Command(name, args...), stderr: newBuf(), done: make(chan error, 1)}
	b.cmd.Stderr = b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() { b.stop(t, 0) })
	return b
}

// stop waits up to grace for the process to end by itself, then kills its
// process group. It may be called more than once.
func (b *background) stop(t *testing.T, grace time.Duration) {
	select {
	case err := <-b.done:
		b.done <- err
		return
	case <-time.After(grace):
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not exit after SIGKILL", b.cmd.Path, b.cmd.Process.Pid)
	}
}

func (b *background) exited() bool {
	select {
	case err := <-b.done:
		b.done <- err
		return true
	default:
		return false
	}
}

// clientCluster is a proxy and an agent serving the ssh resource node1
// (the agent's embedded SSH server) and the tcp resource echo1 (an echo
// server), with the admin user alice's files and what clients need.
type clientCluster struct {
	*trustCluster
	host, port string                   // the proxy's user address
	key        string                   // alice's private key; KEY-cert.pub is its certificate
	config     string                   // `warren config ssh` output: Host warren-proxy, node1
	pinned     string                   // `warren known-hosts` output
	pins       map[string]ssh.PublicKey // Ed25519 host keys, by known_hosts name
	ecdsaPins  map[string]ssh.PublicKey // ECDSA host keys, by known_hosts name
	work       string                   // scratch directory, also reached as node1's files
}

func newClientCluster(t *testing.T) *clientCluster {
	t.Helper()
	c := &clientCluster{trustCluster: newTrustCluster(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); echo.Serve(ln, nil) }()
	t.Cleanup(func() { ln.Close(); <-served })
	c.agent("agent-1", c.token, fmt.Sprintf("  - {name: node1, kind: ssh}\n  - {name: echo1, kind: tcp, addr: %s}\n", ln.Addr()))
	waitFor(t, "node1 and echo1 online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return regexpLine(out, `node1\s+ssh\s+online`) && regexpLine(out, `echo1\s+tcp\s+online`)
	})
	c.host, c.port, _ = net.SplitHostPort(c.user)
	c.key = filepath.Join(c.dir, "alice")
	c.config = filepath.Join(c.dir, "warren_ssh_config")
	if err := os.WriteFile(c.config, []byte(c.adminOK("config", "ssh")), 0o644); err != nil {
		t.Fatal(err)
	}
	c.pinned = filepath.Join(c.dir, "pinned_known_hosts")
	c.adminOK("known-hosts", "--write", c.pinned)
	c.pins = readPins(t, c.pinned, ssh.KeyAlgoED25519)
	c.ecdsaPins = readPins(t, c.pinned, ssh.KeyAlgoECDSA256)
	for _, name := range []string{"[" + c.host + "]:" + c.port, "node1"} {
		if c.pins[name] == nil {
			t.Fatalf("warren known-hosts wrote no key for %s: %v", name, c.pins)
		}
	}
	c.work = filepath.Join(c.dir, "work")
	if err := os.Mkdir(c.work, 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// readPins parses a known_hosts file of plain keys: host pattern to key.
func readPins(t *testing.T, path, keyType string) map[string]ssh.PublicKey {
	t.Helper()
	rest, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pins := map[string]ssh.PublicKey{}
	for {
		marker, hosts, key, _, next, err := ssh.ParseKnownHosts(rest)
		if err == io.EOF {
			return pins
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		// One key type: each host has an Ed25519 and an ECDSA line, and
		// clients differ in which they negotiate (libssh2 prefers ECDSA).
		if marker == "" && key.Type() == keyType {
			for _, h := range hosts {
				pins[h] = key
			}
		}
		rest = next
	}
}

// proxyPin and nodePin are the SHA256 fingerprints of the plain host keys
// of the proxy and node1 ("SHA256:base64").
func (c *clientCluster) proxyPin() string {
	return ssh.FingerprintSHA256(c.pins["["+c.host+"]:"+c.port])
}

func (c *clientCluster) nodePin() string { return ssh.FingerprintSHA256(c.pins["node1"]) }

// nodeECDSAPin is node1's ECDSA key's fingerprint: the key libssh2 takes.
func (c *clientCluster) nodeECDSAPin() string { return ssh.FingerprintSHA256(c.ecdsaPins["node1"]) }

// writeRandom writes n random bytes to path and returns them.
func writeRandom(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d sent", path, len(got), len(want))
	}
}

// TestClientOpenSSH: the OpenSSH tools with the ssh_config `warren config
// ssh` prints: ssh, scp (SFTP and the legacy protocol), sftp, rsync and git
// to node1 through the proxy, and ssh -W to the tcp resource.
func TestClientOpenSSH(t *testing.T) {
	t.Parallel()
	needClients(t, "openssh-client rsync git", "ssh", "scp", "sftp", "rsync", "git")
	c := newClientCluster(t)
	run := clientCmd{}
	if out := run.ok(t, "ssh", "-F", c.config, "-o", "BatchMode=yes", "node1", "echo", "hello"); out != "hello\n" {
		t.Fatalf("ssh node1: got %q", out)
	}
	if res := (clientCmd{stdin: "ping\n"}).run(t, "ssh", "-F", c.config, "-o", "BatchMode=yes", "-W", "echo1:7", "warren-proxy"); res.code != 0 || res.stdout != "ping\n" {
		t.Fatalf("ssh -W echo1:7: %s", res)
	}
	src := filepath.Join(c.work, "src.bin")
	want := writeRandom(t, src, 300<<10)
	for i, proto := range [][]string{nil, {"-O"}} {
		up := filepath.Join(c.work, fmt.Sprintf("scp%d.up", i))
		run.ok(t, "scp", append(append([]string{"-F", c.config, "-o", "BatchMode=yes"}, proto...), src, "node1:"+up)...)
		sameFile(t, up, want)
		down := up + ".down"
		run.ok(t, "scp", append(append([]string{"-F", c.config, "-o", "BatchMode=yes"}, proto...), "node1:"+up, down)...)
		sameFile(t, down, want)
	}
	batch := filepath.Join(c.work, "sftp.batch")
	os.WriteFile(batch, []byte(fmt.Sprintf("cd %s\nput %s sftp.up\nls\nget sftp.up sftp.down\n", c.work, src)), 0o644)
	if out := (clientCmd{dir: c.work}).ok(t, "sftp", "-F", c.config, "-o", "BatchMode=yes", "-b", batch, "node1"); !strings.Contains(out, "sftp.up") {
		t.Fatalf("sftp ls does not list sftp.up:\n%s", out)
	}
	sameFile(t, filepath.Join(c.work, "sftp.up"), want)
	sameFile(t, filepath.Join(c.work, "sftp.down"), want)
	rsh := "ssh -F " + c.config + " -o BatchMode=yes"
	run.ok(t, "rsync", "-e", rsh, src, "node1:"+filepath.Join(c.work, "rsync.up"))
	sameFile(t, filepath.Join(c.work, "rsync.up"), want)
	run.ok(t, "rsync", "-e", rsh, "node1:"+filepath.Join(c.work, "rsync.up"), filepath.Join(c.work, "rsync.down"))
	sameFile(t, filepath.Join(c.work, "rsync.down"), want)

	home := t.TempDir()
	git := clientCmd{env: []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_SSH_COMMAND=" + rsh,
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test"}}
	bare := filepath.Join(c.work, "repo.git")
	git.ok(t, "git", "init", "-q", "--bare", "-b", "main", bare)
	clone := filepath.Join(c.work, "clone")
	git.ok(t, "git", "clone", "-q", "node1:"+bare, clone)
	os.WriteFile(filepath.Join(clone, "README"), []byte("through warren\n"), 0o644)
	git.dir = clone
	git.ok(t, "git", "add", "README")
	git.ok(t, "git", "commit", "-q", "-m", "first")
	git.ok(t, "git", "push", "-q", "origin", "HEAD:main")
	git.dir = bare
	if out := git.ok(t, "git", "log", "--format=%s", "main"); out != "first\n" {
		t.Fatalf("pushed log: got %q", out)
	}
}

// paramikoPython finds a python that imports paramiko: Debian's
// python3-paramiko is for /usr/bin/python3, which may not be the python3
// on PATH.
func paramikoPython(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(py)
		if err != nil || slices.Contains(tried, path) {
			continue
		}
		tried = append(tried, path)
		if res := (clientCmd{}).run(t, path, "-c", "import paramiko"); res.code == 0 {
			return path
		}
	}
	missingClient(t, "no python imports paramiko (tried %v): apt-get install python3-paramiko", tried)
	return ""
}

// TestClientParamiko: paramiko, with the user's certificate
// (key.load_certificate) and only the pinned keys of `warren known-hosts`
// (load_host_keys, RejectPolicy), lists the proxy's resources, talks to
// the tcp resource over direct-tcpip, reaches node1 over a direct-tcpip
// channel (the sock= of a second SSHClient), runs a command there and
// copies a file both ways with SFTP. With the CA-only known_hosts, which
// paramiko cannot use, the proxy is refused as unknown.
func TestClientParamiko(t *testing.T) {
	t.Parallel()
	py := paramikoPython(t)
	c := newClientCluster(t)
	script, err := filepath.Abs(filepath.Join("testdata", "clients", "paramiko_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(c.work, "paramiko.bin")
	want := writeRandom(t, src, 200<<10)
	remote := filepath.Join(c.work, "remote")
	os.Mkdir(remote, 0o755)
	res := (clientCmd{}).run(t, py, script, "session", c.host, c.port, "alice", c.key, c.pinned, c.me, "node1", "echo1", src, remote)
	var got struct {
		Error string
		LS    struct{ Stdout string } `json:"ls"`
		TCP   string                  `json:"tcp"`
		Node  struct {
			Stdout, Stderr string
			Code           int
		}
		SFTPList []string `json:"sftp_list"`
		SFTPBack string   `json:"sftp_back"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || res.code != 0 {
		t.Fatalf("paramiko session: %v\n%s", err, res)
	}
	if !regexpLine(got.LS.Stdout, `node1\s+ssh\s+online`) || !regexpLine(got.LS.Stdout, `echo1\s+tcp\s+online`) {
		t.Errorf("paramiko ls on the proxy:\n%s", got.LS.Stdout)
	}
	if got.TCP != "ping from paramiko\n" {
		t.Errorf("paramiko to echo1 over direct-tcpip: got %q", got.TCP)
	}
	if got.Node.Code != 0 || got.Node.Stdout != "hello from Linux\n" {
		t.Errorf("paramiko on node1: code %d stdout %q stderr %q", got.Node.Code, got.Node.Stdout, got.Node.Stderr)
	}
	if !slices.Equal(got.SFTPList, []string{"up.bin"}) {
		t.Errorf("paramiko sftp listdir: got %v, want [up.bin]", got.SFTPList)
	}
	sameFile(t, filepath.Join(remote, "up.bin"), want)
	sameFile(t, got.SFTPBack, want)

	// Strict: the known_hosts with only the proxy CA's @cert-authority
	// line has no key paramiko can use, and RejectPolicy refuses.
	res = (clientCmd{}).run(t, py, script, "connect", c.host, c.port, "alice", c.key, filepath.Join(c.dir, "known_hosts"))
	if res.code != 1 || !strings.Contains(res.stdout, "not found in known_hosts") {
		t.Fatalf("paramiko with the CA-only known_hosts: %s\nwant the proxy refused as unknown", res)
	}
}

// TestClientPuTTY: plink, pscp and psftp with the user's key and
// certificate in one .ppk (puttygen --certificate), strict in batch mode:
// the proxy and node1 pinned with -hostkey (fingerprints from `warren
// known-hosts`), node1 reached with -proxycmd running plink -nc through
// the proxy; then the same without pins, trusting the two host CAs in
// PuTTY's host CA store. Without a pin or a CA, -batch refuses.
func TestClientPuTTY(t *testing.T) {
	t.Parallel()
	needClients(t, "putty-tools", "plink", "pscp", "psftp", "puttygen")
	c := newClientCluster(t)
	home := t.TempDir() // PuTTY's ~/.putty: no cached host keys
	putty := clientCmd{env: []string{"HOME=" + home}}
	ppk := filepath.Join(c.work, "alice.ppk")
	putty.ok(t, "puttygen", c.key, "--certificate", c.key+"-cert.pub", "-O", "private", "-o", ppk)

	common := []string{"-batch", "-noagent", "-i", ppk}
	jump := fmt.Sprintf("plink -batch -noagent -i %s -hostkey %s -P %s alice@%s -nc %%host:%%port", ppk, c.proxyPin(), c.port, c.host)
	viaProxy := append(slices.Clone(common), "-hostkey", c.nodePin(), "-proxycmd", jump)
	node := c.me + "@node1"

	out := putty.ok(t, "plink", append(slices.Clone(common), "-ssh", "-hostkey", c.proxyPin(), "-P", c.port, "alice@"+c.host, "ls")...)
	if !regexpLine(out, `node1\s+ssh\s+online`) {
		t.Errorf("plink ls on the proxy:\n%s", out)
	}
	if out := putty.ok(t, "plink", append(slices.Clone(viaProxy), "-ssh", node, "echo hello from $(uname)")...); out != "hello from Linux\n" {
		t.Errorf("plink on node1: got %q", out)
	}
	tcp := putty
	tcp.stdin = "ping from plink\n"
	if out := tcp.ok(t, "plink", append(slices.Clone(common), "-ssh", "-hostkey", c.proxyPin(), "-P", c.port, "alice@"+c.host, "-nc", "echo1:7")...); out != "ping from plink\n" {
		t.Errorf("plink -nc echo1:7: got %q", out)
	}

	src := filepath.Join(c.work, "putty.bin")
	want := writeRandom(t, src, 200<<10)
	up := filepath.Join(c.work, "pscp.up")
	putty.ok(t, "pscp", append(slices.Clone(viaProxy), src, node+":"+up)...) // SFTP
	sameFile(t, up, want)
	down := filepath.Join(c.work, "pscp.down")
	putty.ok(t, "pscp", append(slices.Clone(viaProxy), "-scp", node+":"+up, down)...) // the legacy protocol
	sameFile(t, down, want)
	batch := filepath.Join(c.work, "psftp.batch")
	got := filepath.Join(c.work, "psftp.down")
	os.WriteFile(batch, []byte(fmt.Sprintf("cd %s\nls\nget pscp.up %s\n", c.work, got)), 0o644)
	if out := putty.ok(t, "psftp", append(slices.Clone(viaProxy), "-b", batch, node)...); !strings.Contains(out, "pscp.up") {
		t.Errorf("psftp ls does not list pscp.up:\n%s", out)
	}
	sameFile(t, got, want)

	// Strict: no pin, or node1's pin for the proxy, and -batch refuses.
	for _, tc := range []struct {
		pin  []string
		want string
	}{
		{nil, "Cannot confirm a host key in batch mode"},
		{[]string{"-hostkey", c.nodePin()}, "Host key not in manually configured list"},
	} {
		res := putty.run(t, "plink", append(append(slices.Clone(common), tc.pin...), "-ssh", "-P", c.port, "alice@"+c.host, "ls")...)
		if res.code == 0 || !strings.Contains(res.stderr, tc.want) {
			t.Errorf("plink to the proxy with pin %v: %s\nwant %q", tc.pin, res, tc.want)
		}
	}

	// The host CAs instead of pins: one file per CA in ~/.putty/sshhostcas
	// (what PuTTY's "Configure host CAs" stores), the proxy CA for the
	// proxy's host, the agent CA for every other name.
	caHome := t.TempDir()
	caDir := filepath.Join(caHome, ".putty", "sshhostcas")
	os.MkdirAll(caDir, 0o700)
	_, proxyCA, agentCA, err := pki.LoadPublic(c.auth)
	if err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]struct {
		key      ssh.PublicKey
		validity string
	}{
		"warren-proxy-ca": {proxyCA, c.host},
		"warren-agent-ca": {agentCA, "* && !" + c.host},
	} {
		text := fmt.Sprintf("PublicKey=%s\nValidity=%s\nPermitRSASHA1=0\nPermitRSASHA256=1\nPermitRSASHA512=1\n",
			strings.Fields(string(ssh.MarshalAuthorizedKey(ca.key)))[1], ca.validity)
		os.WriteFile(filepath.Join(caDir, name), []byte(text), 0o600)
	}
	byCA := clientCmd{env: []string{"HOME=" + caHome}}
	jumpCA := fmt.Sprintf("plink -batch -noagent -i %s -P %s alice@%s -nc %%host:%%port", ppk, c.port, c.host)
	if out := byCA.ok(t, "plink", append(slices.Clone(common), "-proxycmd", jumpCA, "-ssh", node, "echo trusted by CA")...); out != "trusted by CA\n" {
		t.Errorf("plink on node1 with the host CAs: got %q", out)
	}
	// The agent CA does not vouch for the proxy's host.
	os.Remove(filepath.Join(caDir, "warren-proxy-ca"))
	if res := byCA.run(t, "plink", append(slices.Clone(common), "-ssh", "-P", c.port, "alice@"+c.host, "ls")...); res.code == 0 || !strings.Contains(res.stderr, "Cannot confirm a host key in batch mode") {
		t.Errorf("plink to the proxy with only the agent CA: %s\nwant a host key refusal", res)
	}
}

// TestClientCurl: libssh2 (here through curl's sftp:// and scp://) cannot
// sign with an ed25519 certificate, which is what `warren user add`
// issues: curl fails with "Authentication failure" (exit 67) and, when it
// falls back to the plain key, the node's refusal is audited with the
// reason. curl cannot jump, so node1 is reached through an `ssh -N -L`
// forward. An ECDSA key certified by the same user CA, the same way
// (pki's IssueUserCert), works for sftp and scp both ways, with node1's
// key pinned by --hostpubsha256; a wrong pin is refused.
func TestClientCurl(t *testing.T) {
	t.Parallel()
	needClients(t, "curl openssh-client", "curl", "ssh")
	if res := (clientCmd{}).run(t, "curl", "-V"); !strings.Contains(res.stdout, "libssh2") || !strings.Contains(res.stdout, "sftp") {
		missingClient(t, "curl is not built with libssh2 (sftp, scp): %s", res.stdout)
	}
	c := newClientCluster(t)
	fwd := freeAddr(t)
	forward := startBackground(t, "ssh", "-F", c.config, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-N", "-L", fwd+":node1:22", "warren-proxy")
	waitFor(t, "the ssh -L forward to node1", func() bool {
		if forward.exited() {
			t.Fatalf("ssh -L exited: %s", forward.stderr.String())
		}
		cn, err := net.DialTimeout("tcp", fwd, time.Second)
		if err != nil {
			return false
		}
		defer cn.Close()
		cn.SetDeadline(time.Now().Add(5 * time.Second))
		line := make([]byte, 8)
		_, err = io.ReadFull(cn, line)
		return err == nil && string(line) == "SSH-2.0-"
	})
	pin := strings.TrimPrefix(c.nodeECDSAPin(), "SHA256:")  // libssh2 negotiates ECDSA
	curl := clientCmd{env: []string{"HOME=" + t.TempDir()}} // no ~/.ssh: only the pin decides
	url := func(scheme, path string) string { return fmt.Sprintf("%s://%s@%s%s", scheme, c.me, fwd, path) }
	src := filepath.Join(c.work, "curl.bin")
	want := writeRandom(t, src, 200<<10)

	// Warren's own certificate: libssh2 finds no signer for the
	// ssh-ed25519-cert-v01@openssh.com key type and gives up.
	res := curl.run(t, "curl", "-sS", "--hostpubsha256", pin, "--key", c.key, "--pubkey", c.key+"-cert.pub", url("sftp", src))
	if res.code != 67 || !strings.Contains(res.stderr, "Authentication failure") {
		t.Fatalf("curl with the ed25519 certificate: %s\nwant exit 67, Authentication failure", res)
	}
	// Without --pubkey libssh2 offers the plain key, which the node
	// refuses and says why (in the audit log; curl shows no banner).
	res = curl.run(t, "curl", "-sS", "--hostpubsha256", pin, "--key", c.key, url("sftp", src))
	if res.code != 67 || !strings.Contains(res.stderr, "Authentication failure") {
		t.Fatalf("curl with the plain key: %s\nwant exit 67, Authentication failure", res)
	}
	waitFor(t, "the plain key's refusal in the audit log", func() bool {
		for _, ev := range c.auditEvents() {
			if ev.Resource == "node1" && strings.Contains(ev.Error, "plain public keys are not accepted; use a user certificate") {
				return true
			}
		}
		return false
	})

	// An ECDSA certificate from `warren user add --key-type ecdsa` works.
	if _, errs, code := runWarren(t, "user", "add", "carol", "--logins", c.me, "--roles", "access", "--key-type", "ecdsa", "--data-dir", c.auth, "--out", filepath.Join(c.work, "carol")); code != 0 {
		t.Fatalf("user add --key-type ecdsa: code %d stderr %q", code, errs)
	}
	key := filepath.Join(c.work, "carol", "carol")
	auth := []string{"-sS", "--hostpubsha256", pin, "--key", key, "--pubkey", key + "-cert.pub"}
	for _, scheme := range []string{"sftp", "scp"} {
		up := filepath.Join(c.work, scheme+".up")
		curl.ok(t, "curl", append(slices.Clone(auth), "-T", src, url(scheme, up))...)
		sameFile(t, up, want)
		down := up + ".down"
		curl.ok(t, "curl", append(slices.Clone(auth), "-o", down, url(scheme, up))...)
		sameFile(t, down, want)
	}
	if out := curl.ok(t, "curl", append(slices.Clone(auth), url("sftp", c.work+"/"))...); !strings.Contains(out, "sftp.up") || !strings.Contains(out, "scp.up") {
		t.Errorf("curl sftp directory listing:\n%s", out)
	}
	// Strict: the proxy's pin is not node1's.
	res = curl.run(t, "curl", "-sS", "--hostpubsha256", strings.TrimPrefix(c.proxyPin(), "SHA256:"), "--key", key, "--pubkey", key+"-cert.pub", url("sftp", src))
	if res.code != 60 || !strings.Contains(res.stderr, "mismatch sha256 fingerprint") {
		t.Fatalf("curl with a wrong pin: %s\nwant exit 60, mismatch sha256 fingerprint", res)
	}
}

// mounted reports whether dir is a FUSE sshfs mount point.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir && strings.Contains(l, " - fuse.sshfs ") {
			return true
		}
	}
	return false
}

// TestClientSSHFS: sshfs mounts a directory of node1 through the proxy
// with `-F` and the `warren config ssh` file; files written on either side
// are seen on the other; fusermount -u unmounts it and sshfs exits.
func TestClientSSHFS(t *testing.T) {
	t.Parallel()
	needClients(t, "sshfs", "sshfs")
	fusermount := "fusermount3"
	if _, err := exec.LookPath(fusermount); err != nil {
		fusermount = "fusermount"
		needClients(t, "fuse3", fusermount)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missingClient(t, "sshfs needs /dev/fuse: %v", err)
	}
	c := newClientCluster(t)
	remote := filepath.Join(c.work, "exported")
	mnt := filepath.Join(c.work, "mnt")
	os.Mkdir(remote, 0o755)
	os.Mkdir(mnt, 0o755)
	os.WriteFile(filepath.Join(remote, "from-node.txt"), []byte("written on node1\n"), 0o644)

	// -f: sshfs stays in the foreground, so its PID is the one started.
	sshfs := startBackground(t, "sshfs", "-f", "-F", c.config, "-o", "BatchMode=yes", "node1:"+remote, mnt)
	t.Cleanup(func() {
		if mounted(mnt) {
			if res := (clientCmd{}).run(t, fusermount, "-u", mnt); res.code != 0 {
				t.Errorf("%s -u %s: %s", fusermount, mnt, res)
			}
		}
		sshfs.stop(t, 10*time.Second)
	})
	waitFor(t, "the sshfs mount", func() bool {
		if sshfs.exited() {
			t.Fatalf("sshfs exited: %s", sshfs.stderr.String())
		}
		return mounted(mnt)
	})
	if b, err := os.ReadFile(filepath.Join(mnt, "from-node.txt")); err != nil || string(b) != "written on node1\n" {
		t.Fatalf("reading through sshfs: %q, %v", b, err)
	}
	want := writeRandom(t, filepath.Join(mnt, "through-sshfs.bin"), 300<<10)
	// sshfs writes asynchronously (unless -o sshfs_sync): close returns
	// before the SFTP server on node1 has written every block.
	written := filepath.Join(remote, "through-sshfs.bin")
	waitFor(t, "the file written through sshfs to land on node1", func() bool {
		got, _ := os.ReadFile(written)
		return len(got) == len(want)
	})
	sameFile(t, written, want)
	entries, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"from-node.txt", "through-sshfs.bin"}) {
		t.Errorf("listing through sshfs: %v", names)
	}
	(clientCmd{}).ok(t, fusermount, "-u", mnt)
	sshfs.stop(t, 10*time.Second)
	if !sshfs.exited() || mounted(mnt) {
		t.Fatalf("after %s -u: sshfs exited %v, still mounted %v", fusermount, sshfs.exited(), mounted(mnt))
	}
}

// TestClientAnsible: ansible's ssh connection, with its default ssh
// arguments (a ControlPersist master) and the `warren config ssh` file in
// ansible_ssh_common_args, runs the ping and command modules on node1
// through the proxy (module files go over SFTP). The test then stops the
// masters ansible left behind.
func TestClientAnsible(t *testing.T) {
	t.Parallel()
	needClients(t, "ansible-core", "ansible")
	c := newClientCluster(t)
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory")
	os.WriteFile(inv, []byte(fmt.Sprintf("[warren]\nnode1 ansible_ssh_common_args='-F %s' ansible_python_interpreter=auto_silent\n", c.config)), 0o644)
	ansible := clientCmd{dir: dir, env: []string{
		"HOME=" + dir, "ANSIBLE_CONFIG=" + filepath.Join(dir, "none.cfg"), "ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "tmp"),
		"ANSIBLE_HOST_KEY_CHECKING=True", "ANSIBLE_NOCOLOR=1",
	}}
	masters := filepath.Join(dir, ".ansible", "cp") // ansible's default ControlPath directory
	t.Cleanup(func() {
		socks, _ := filepath.Glob(filepath.Join(masters, "*"))
		for _, sock := range socks {
			if res := (clientCmd{}).run(t, "ssh", "-F", "/dev/null", "-o", "ControlPath="+sock, "-O", "exit", "node1"); res.code != 0 {
				t.Errorf("stopping ansible's ssh master %s: %s", sock, res)
			}
		}
		t.Logf("stopped %d ssh master(s) ansible left", len(socks))
	})
	if out := ansible.ok(t, "ansible", "-i", inv, "node1", "-m", "ping"); !strings.Contains(out, `"ping": "pong"`) {
		t.Errorf("ansible -m ping:\n%s", out)
	}
	if out := ansible.ok(t, "ansible", "-i", inv, "node1", "-m", "command", "-a", "uname"); !regexpLine(out, `^node1 \| CHANGED \| rc=0`) || !strings.Contains(out, "\nLinux") {
		t.Errorf("ansible -m command -a uname:\n%s", out)
	}
}
