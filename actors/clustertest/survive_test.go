package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/storage/audit"
)

// shell is a stock `ssh -tt` session whose output the test watches.
type shell struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan error
}

func startShell(t *testing.T, c *Cluster, entry, host string) *shell {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	sh := &shell{done: make(chan error, 1)}
	sh.cmd = exec.CommandContext(ctx, "ssh", "-F", c.SSHConfig, "-tt", "-J", entry, host)
	var err error
	if sh.stdin, err = sh.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sh.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.cmd.Stderr = &lockedWriter{mu: &sh.mu, w: &sh.out}
	if err := sh.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReader(stdout)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			sh.mu.Lock()
			sh.out.Write(buf[:n])
			sh.mu.Unlock()
			if err != nil {
				break
			}
		}
		sh.done <- sh.cmd.Wait()
	}()
	return sh
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// roundTrip types a command whose output (not its echo) the shell must
// print, and waits for it.
func (sh *shell) roundTrip(t *testing.T, i int) {
	t.Helper()
	fmt.Fprintf(sh.stdin, "echo $((%d+1000))Z\n", i)
	want := fmt.Sprintf("%dZ\r", i+1000)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sh.mu.Lock()
		got := strings.Contains(sh.out.String(), want)
		sh.mu.Unlock()
		if got {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t.Fatalf("the shell never printed %q; its output:\n%s", want, sh.out.String())
}

// writeRandom writes n pseudo-random bytes to path and returns their hash.
func writeRandom(t *testing.T, path string, n int) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	seed[0] = 42
	rng := rand.NewChaCha8(seed)
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rng, int64(n)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func fileHash(t *testing.T, path string) [32]byte {
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
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// middleOf is the proxy between entry and the agent in the newest session
// path entry's log records for host ("entry>middle>agent"), or "".
func middleOf(c *Cluster, msg, entry string) []string {
	var middles []string
	for _, path := range c.ProxyLogValues(msg, "path") {
		parts := strings.Split(path, ">")
		if len(parts) == 3 && parts[0] == entry {
			middles = append(middles, parts[1])
		}
	}
	return middles
}

// TestSessionsSurviveProxyKills: a 256 MiB scp and an interactive `ssh -tt`
// shell enter through the one proxy that holds no tunnel of the agent, so
// both cross a peer proxy that holds one of its two tunnels. kill -9 of
// that proxy (the middle of the path, and the holder of the tunnel the
// sessions use) and then of the agent's other original proxy: both
// sessions go on, first over the agent's other tunnel, then over the
// tunnel it opens to the entry proxy after re-homing. The file arrives
// byte-identical and the shell answers every command.
func TestSessionsSurviveProxyKills(t *testing.T) {
	c := New(t, Options{
		Proxies: 3,
		Runner:  RunProcesses,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}},
		Agent:   func(_ string, cfg *agent.Config) { cfg.ConnectionCount = 2 },
	})
	a := c.Agents["agent-1"]
	c.WaitFor("two tunnels", func() bool { return distinctTunnels(a, 2) })
	held := a.TunnelProxies()
	var entry string
	for _, p := range c.Proxies {
		if !slices.Contains(held, p.ID()) {
			entry = p.ID()
		}
	}
	c.WaitRoutable("node1")

	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	const size = 256 << 20
	want := writeRandom(t, src, size)

	sh := startShell(t, c, entry, "node1")
	sh.roundTrip(t, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Bounded rate (200 Mbit/s), so the copy is still running at both kills.
	scp := exec.CommandContext(ctx, "scp", "-F", c.SSHConfig, "-J", entry, "-l", "200000", src, "node1:"+dst)
	var scpErr bytes.Buffer
	scp.Stderr = &scpErr
	if err := scp.Start(); err != nil {
		t.Fatal(err)
	}
	scpDone := make(chan error, 1)
	go func() { scpDone <- scp.Wait() }()
	c.WaitFor("the copy under way", func() bool { return fileSize(dst) > 16<<20 })

	// The middle of the shell's path; the copy's is one of the two.
	middles := middleOf(c, "session started", entry)
	if len(middles) < 2 {
		t.Fatalf("sessions through %s crossed %v; want two peer paths", entry, middles)
	}
	first := middles[0]
	var second string
	for _, p := range held {
		if p != first {
			second = p
		}
	}
	t.Logf("entry %s; the agent's tunnels on %v; the shell crosses %s, the copy %s", entry, held, first, middles[1])

	c.KillProxy(first)
	killed := time.Now()
	sh.roundTrip(t, 2)
	t.Logf("the shell answered %s after kill -9 of %s", time.Since(killed).Round(time.Millisecond), first)
	c.WaitFor("the agent's tunnel on the entry proxy", func() bool { return slices.Contains(a.TunnelProxies(), entry) })
	at := fileSize(dst)
	if at >= size {
		t.Fatalf("the copy finished before the second kill; make it slower")
	}
	c.KillProxy(second)
	killed = time.Now()
	sh.roundTrip(t, 3)
	t.Logf("the shell answered %s after kill -9 of %s (copy at %d MiB)", time.Since(killed).Round(time.Millisecond), second, at>>20)

	select {
	case err := <-scpDone:
		if err != nil {
			t.Fatalf("scp: %v; stderr %q", err, scpErr.String())
		}
	case <-ctx.Done():
		t.Fatal("scp did not finish")
	}
	if got := fileHash(t, dst); got != want {
		t.Fatalf("the copy differs from the source (%d bytes, want %d)", fileSize(dst), size)
	}
	fmt.Fprintf(sh.stdin, "exit 7\n")
	select {
	case err := <-sh.done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			sh.mu.Lock()
			t.Fatalf("the shell ended with %v, want exit 7; output:\n%s", err, sh.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the shell did not exit")
	}
	resumed := c.ProxyLogValues("session resumed", "path")
	t.Logf("resumed paths: %v", resumed)
	if len(resumed) < 2 {
		t.Errorf("%d resumes logged, want at least one per session", len(resumed))
	}
}

// TestDetachedSessionEndsWithAnAuditRecord: when the agent itself is gone
// no path can come back; the session ends after session.resume_timeout,
// and its session.end record says why.
func TestDetachedSessionEndsWithAnAuditRecord(t *testing.T) {
	const wait = 2 * time.Second
	c := New(t, Options{
		Proxies:   2,
		Agents:    map[string][]agent.ResourceConfig{"agent-1": {{Name: "echo", Kind: "tcp", Addr: startEcho(t)}}},
		ProxyYAML: fmt.Sprintf("session:\n  resume_timeout: %s\n", wait),
	})
	entry := c.Proxies[0]
	cl := goClientTo(t, c, entry.UserAddr())
	conn, err := cl.Dial("tcp", "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.Agents["agent-1"].Close()
	gone := time.Now()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, conn); ended <- err }()
	select {
	case <-ended:
		t.Logf("the session ended %s after its agent (resume_timeout %s)", time.Since(gone).Round(time.Millisecond), wait)
	case <-time.After(30 * time.Second):
		t.Fatal("the detached session never ended")
	}
	var end *audit.Event
	c.WaitFor("the session.end record", func() bool {
		r := c.Run(nil, "ssh", entry.ID(), "audit", "--since", "1h", "--json")
		for line := range strings.Lines(r.Stdout) {
			var ev audit.Event
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Type == "session.end" && ev.Resource == "echo" {
				end = &ev
			}
		}
		return end != nil
	})
	if end.Outcome != "error" || !strings.Contains(end.Error, "no path") {
		t.Errorf("session.end: outcome %q error %q; want an error that says no path came back", end.Outcome, end.Error)
	}
}
