package clustertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/internal/harness"
)

// newDevLike starts what `warren dev` starts: node1 (embedded SSH) and
// echo (tcp to an echo server).
func newDevLike(t *testing.T) *Cluster {
	t.Helper()
	for _, bin := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	echo := startEcho(t)
	return New(t, Options{Agents: map[string][]agent.ResourceConfig{
		"agent-1": {{Name: "node1", Kind: "ssh", Labels: map[string]string{"env": "dev"}}},
		"agent-2": {{Name: "echo", Kind: "tcp", Addr: echo}},
	}})
}

func startEcho(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns and closed
	conns := map[net.Conn]struct{}{}
	closed := false
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				io.Copy(c, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func randomFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestOpenSSHThroughProxy(t *testing.T) {
	c := newDevLike(t)

	t.Run("exec", func(t *testing.T) {
		r := c.Run(nil, "ssh", "node1", "echo hi")
		if r.Code != 0 || r.Stdout != "hi\n" {
			t.Fatalf("ssh node1 'echo hi': got code %d stdout %q stderr %q, want 0 and \"hi\\n\"", r.Code, r.Stdout, r.Stderr)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		if r := c.Run(nil, "ssh", "node1", "exit 7"); r.Code != 7 {
			t.Fatalf("ssh node1 'exit 7': got code %d (stderr %q), want 7", r.Code, r.Stderr)
		}
	})
	t.Run("pty shell", func(t *testing.T) {
		r := c.Run(strings.NewReader("tty; echo TERM=$TERM\nexit 3\n"), "ssh", "-tt", "node1")
		if r.Code != 3 || !strings.Contains(r.Stdout, "/dev/pts/") {
			t.Fatalf("ssh -tt node1: got code %d stdout %q stderr %q, want 3 and a /dev/pts tty", r.Code, r.Stdout, r.Stderr)
		}
	})
	t.Run("proxy ls", func(t *testing.T) {
		r := c.Run(nil, "ssh", "proxy-1", "ls")
		if r.Code != 0 || !strings.Contains(r.Stdout, "node1") || !strings.Contains(r.Stdout, "echo") {
			t.Fatalf("ssh proxy-1 ls: got code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
		}
	})

	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	sum := randomFile(t, src, 64<<20)
	remote := filepath.Join(dir, "remote")
	if err := os.Mkdir(remote, 0o777); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, path string) {
		t.Helper()
		if got := fileSum(t, path); got != sum {
			t.Fatalf("%s: sha256 %s, want %s", path, got, sum)
		}
	}
	t.Run("scp both ways", func(t *testing.T) {
		up := filepath.Join(remote, "scp-up")
		if r := c.Run(nil, "scp", "-q", src, "node1:"+up); r.Code != 0 {
			t.Fatalf("scp up: code %d stderr %q", r.Code, r.Stderr)
		}
		check(t, up)
		down := filepath.Join(dir, "scp-down")
		if r := c.Run(nil, "scp", "-q", "node1:"+up, down); r.Code != 0 {
			t.Fatalf("scp down: code %d stderr %q", r.Code, r.Stderr)
		}
		check(t, down)
	})
	t.Run("sftp put and get", func(t *testing.T) {
		batch := filepath.Join(dir, "batch")
		put, get := filepath.Join(remote, "sftp-put"), filepath.Join(dir, "sftp-get")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, put, put, get)), 0o644)
		if r := c.Run(nil, "sftp", "-q", "-b", batch, "node1"); r.Code != 0 {
			t.Fatalf("sftp: code %d stderr %q", r.Code, r.Stderr)
		}
		check(t, put)
		check(t, get)
	})
	t.Run("ssh stdin stream", func(t *testing.T) {
		f, _ := os.Open(src)
		defer f.Close()
		out := filepath.Join(remote, "cat")
		if r := c.Run(f, "ssh", "node1", "cat > "+out); r.Code != 0 {
			t.Fatalf("ssh cat: code %d stderr %q", r.Code, r.Stderr)
		}
		check(t, out)
	})
	t.Run("rsync", func(t *testing.T) {
		if _, err := exec.LookPath("rsync"); err != nil {
			t.Skip("rsync not installed")
		}
		dst := filepath.Join(remote, "rsync")
		if r := c.Run(nil, "rsync", "-e", c.SSHArgs(), src, "node1:"+dst); r.Code != 0 {
			t.Fatalf("rsync: code %d stderr %q", r.Code, r.Stderr)
		}
		check(t, dst)
	})
	t.Run("git over ssh", func(t *testing.T) {
		if _, err := exec.LookPath("git"); err != nil {
			t.Skip("git not installed")
		}
		repo := filepath.Join(remote, "repo.git")
		if out, err := exec.Command("git", "init", "-q", "--bare", repo).CombinedOutput(); err != nil {
			t.Fatalf("git init: %v %s", err, out)
		}
		work := filepath.Join(dir, "work")
		git := func(args ...string) {
			t.Helper()
			cmd := exec.Command("git", args...)
			cmd.Dir = work
			cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+c.SSHArgs(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		os.Mkdir(work, 0o755)
		git("clone", "-q", "node1:"+repo, ".")
		os.WriteFile(filepath.Join(work, "f"), []byte("through warren\n"), 0o644)
		git("add", "f")
		git("commit", "-qm", "first")
		git("push", "-q", "origin", "HEAD:main")
		out, err := exec.Command("git", "--git-dir", repo, "show", "main:f").Output()
		if err != nil || string(out) != "through warren\n" {
			t.Fatalf("pushed file: got %q err %v", out, err)
		}
	})
	t.Run("ssh -L to echo", func(t *testing.T) {
		port := freePort(t)
		cmd := exec.Command("ssh", "-F", c.SSHConfig, "-N", "-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:echo:7", port), "proxy-1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		var conn net.Conn
		c.WaitFor("ssh -L listening", func() bool {
			var err error
			conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			return err == nil
		})
		defer conn.Close()
		f, _ := os.Open(src)
		defer f.Close()
		go func() { io.Copy(conn, f); conn.(*net.TCPConn).CloseWrite() }()
		h := sha256.New()
		if _, err := io.Copy(h, conn); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			t.Fatalf("echo through ssh -L: sha256 %s, want %s (ssh stderr %q)", got, sum, stderr.String())
		}
	})
	t.Run("audit", func(t *testing.T) {
		r := c.Run(nil, "ssh", "proxy-1", "audit", "--since", "1h")
		if r.Code != 0 || !strings.Contains(r.Stdout, "session.end") || !strings.Contains(r.Stdout, "node1") ||
			!strings.Contains(r.Stdout, "session.login") || !strings.Contains(r.Stdout, " "+c.Login+" ") {
			t.Fatalf("audit: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
		}
	})
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestRefusals(t *testing.T) {
	c := newDevLike(t)

	t.Run("unknown resource", func(t *testing.T) {
		r := c.Run(nil, "ssh", "unknown-resource", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, `unknown resource "unknown-resource"`) {
			t.Fatalf("got code %d stderr %q, want a refusal naming the resource", r.Code, r.Stderr)
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		dir := t.TempDir()
		key, _ := c.IssueUser("bob", []string{c.Login}, nil, time.Second, dir)
		// Wait out the validity instead of faking a clock: the proxy
		// under test reads the real one.
		time.Sleep(1100 * time.Millisecond)
		r := c.Run(nil, "ssh", "-o", "LogLevel=INFO", "-i", key, "-o", "CertificateFile="+key+"-cert.pub", "-o", "User=bob", "proxy-1", "ls")
		if r.Code == 0 || !strings.Contains(r.Stderr, "expired") {
			t.Fatalf("got code %d stderr %q, want a refusal saying the certificate expired", r.Code, r.Stderr)
		}
	})
	t.Run("foreign CA", func(t *testing.T) {
		// Another cluster's authority only: a second proxy in this
		// process would race inside protoactor's remote.Start.
		other, err := harness.New(t.TempDir(), "other")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		u, err := other.IssueUser("mallory", []string{c.Login}, nil, time.Hour, dir)
		if err != nil {
			t.Fatal(err)
		}
		key := u.Key
		r := c.Run(nil, "ssh", "-o", "LogLevel=INFO", "-i", key, "-o", "CertificateFile="+key+"-cert.pub", "-o", "User=mallory", "proxy-1", "ls")
		if r.Code == 0 || !strings.Contains(r.Stderr, "not signed by the cluster user CA") {
			t.Fatalf("got code %d stderr %q, want a refusal naming the CA", r.Code, r.Stderr)
		}
	})
	t.Run("garbage on the ports", func(t *testing.T) {
		for _, addr := range []string{c.Proxy.UserAddr(), c.Proxy.TunnelAddr()} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n\x00\x01\x02garbage\r\n")
			conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			io.Copy(io.Discard, conn) // the proxy hangs up
			conn.Close()
			if !strings.HasPrefix(line, "SSH-2.0-") {
				t.Errorf("%s: got banner %q, want an SSH banner before the hang-up", addr, line)
			}
		}
		// Everyone else is still served.
		if r := c.Run(nil, "ssh", "node1", "echo still"); r.Stdout != "still\n" {
			t.Fatalf("after garbage: got %q (stderr %q)", r.Stdout, r.Stderr)
		}
	})
	t.Run("wrong join token", func(t *testing.T) {
		cfg := c.AgentConfig("intruder", []agent.ResourceConfig{{Name: "evil", Kind: "ssh"}})
		cfg.JoinToken = "not-a-token"
		a, err := agent.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = a.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "join token refused") {
			t.Fatalf("got %v, want a join token refusal", err)
		}
		if r := c.Run(nil, "ssh", "node1", "echo still"); r.Stdout != "still\n" {
			t.Fatalf("after a bad join: got %q (stderr %q)", r.Stdout, r.Stderr)
		}
	})
}

// TestAgentLossAndReturn: the proxy drops an agent's routes when its tunnel
// closes, refuses new sessions with a clear reason, and routes again when
// the agent is back, with no proxy restart.
func TestAgentLossAndReturn(t *testing.T) {
	c := newDevLike(t)
	res := []agent.ResourceConfig{{Name: "node1", Kind: "ssh"}}
	c.Agents["agent-1"].Close()
	c.WaitFor("node1 offline", func() bool {
		for _, e := range c.Proxy.Table().Snapshot().Lookup("node1") {
			if e.Online {
				return false
			}
		}
		return true
	})
	r := c.Run(nil, "ssh", "node1", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, `resource "node1" is offline`) {
		t.Fatalf("while the agent is away: got code %d stderr %q, want an offline refusal", r.Code, r.Stderr)
	}
	// The same agent (same data dir, so no new join) comes back.
	c.StartAgent("agent-1", res)
	c.WaitRoutable("node1")
	if r := c.Run(nil, "ssh", "node1", "echo back"); r.Stdout != "back\n" {
		t.Fatalf("after return: got %q (stderr %q)", r.Stdout, r.Stderr)
	}
}

// TestProxyRestartServesLastKnownView: a restarted proxy lists what it
// knew from its Pebble catalog at once, as offline, until the agent's
// tunnel returns.
func TestProxyRestartServesLastKnownView(t *testing.T) {
	c := newDevLike(t)
	cfg := c.Proxy.Config()
	for _, a := range c.Agents {
		a.Close()
	}
	c.Proxy.Close()
	c.StartProxy(cfg)
	snap := c.Proxy.Table().Snapshot()
	for _, name := range []string{"node1", "echo"} {
		eps := snap.Lookup(name)
		if len(eps) != 1 || eps[0].Online {
			t.Fatalf("%s after restart: got %+v, want one offline entry from the catalog", name, eps)
		}
	}
	c.WriteSSHConfig()
	r := c.Run(nil, "ssh", "node1", "true")
	if !strings.Contains(r.Stderr, `resource "node1" is offline`) {
		t.Fatalf("before the agent returns: got code %d stderr %q, want an offline refusal", r.Code, r.Stderr)
	}
	// The agent comes back to the new proxy address.
	ac := c.AgentConfig("agent-1", []agent.ResourceConfig{{Name: "node1", Kind: "ssh"}})
	a, err := agent.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c.WaitRoutable("node1")
	if r := c.Run(nil, "ssh", "node1", "echo back"); r.Stdout != "back\n" {
		t.Fatalf("after the agent returned: got %q (stderr %q)", r.Stdout, r.Stderr)
	}
}
