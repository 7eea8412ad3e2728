package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/internal/model"
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

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// middleOf lists, in log order, the proxy between entry and the agent of
// every session path ("entry>middle>agent") the proxies logged with msg.
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

// spareEntry starts 3 proxy processes and agent-1, which serves node1
// with tunnels on two of them; entry is the third, so every session
// through it crosses a peer proxy.
func spareEntry(t *testing.T) (c *Cluster, a *agent.Agent, held []string, entry string) {
	t.Helper()
	c = New(t, Options{
		Proxies: 3,
		Runner:  RunProcesses,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}},
		Agent:   func(_ string, cfg *agent.Config) { cfg.ConnectionCount = 2 },
	})
	a = c.Agents["agent-1"]
	c.WaitFor("two tunnels", func() bool { return distinctTunnels(a, 2) })
	held = a.TunnelProxies()
	for _, p := range c.Proxies {
		if !slices.Contains(held, p.ID()) {
			entry = p.ID()
		}
	}
	c.WaitRoutable("node1")
	return c, a, held, entry
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
	c, a, held, entry := spareEntry(t)

	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	const size = 256 << 20
	want := randomFile(t, src, size)

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
	if got := fileSum(t, dst); got != want {
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
	// The entry proxy's status page lists them as failovers, each from
	// the path that broke.
	var ov model.Overview
	if i := slices.IndexFunc(c.Proxies, func(p *Proxy) bool { return p.ID() == entry }); i < 0 {
		t.Errorf("no proxy %s", entry)
	} else if err := c.H.API(c.Proxies[i].H, "/api/v1/overview", &ov); err != nil {
		t.Error(err)
	}
	t.Logf("failovers on %s: %+v", entry, ov.Failovers)
	moved := 0
	for _, f := range ov.Failovers {
		if f.Kind == model.FailoverResume && f.Resource == "node1" && f.From != f.To && strings.HasPrefix(f.From, entry+">") && strings.HasPrefix(f.To, entry+">") {
			moved++
		}
	}
	if moved < 2 {
		t.Errorf("%s lists %d resumes of node1 among its failovers %+v, want at least one per session", entry, moved, ov.Failovers)
	}
}

// TestDrainMovesForwardedSessionsAndWarnsEntered stops (SIGTERM) a proxy
// that holds one of the agent's two tunnels while two shells run through
// it: one entered elsewhere and only crosses it, one entered through it.
// The first moves onto another path and goes on; the second's user reads
// the proxy's warning on the terminal, and the session ends with the
// shutdown grace.
func TestDrainMovesForwardedSessionsAndWarnsEntered(t *testing.T) {
	c, a, _, entry := spareEntry(t)
	crossing := startShell(t, c, entry, "node1")
	crossing.roundTrip(t, 1)
	middles := middleOf(c, "session started", entry)
	if len(middles) != 1 {
		t.Fatalf("the crossing shell's path: %v", middles)
	}
	leaving := middles[0]
	entered := startShell(t, c, leaving, "node1")
	entered.roundTrip(t, 1)

	stopped := time.Now()
	c.StopProxy(leaving)
	t.Logf("%s stopped in %s", leaving, time.Since(stopped).Round(time.Millisecond))
	if n := c.ProxyLogCount(proxy.DrainingMsg); n != 1 {
		t.Errorf("%d proxies logged %q, want the one stopped", n, proxy.DrainingMsg)
	}
	select {
	case err := <-entered.done:
		t.Logf("the shell that entered through %s ended: %v", leaving, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the shell that entered through the stopped proxy did not end")
	}
	entered.mu.Lock()
	out := entered.out.String()
	entered.mu.Unlock()
	if !strings.Contains(out, "is shutting down; this session ends within") {
		t.Errorf("the entered shell's user was not told; its output:\n%s", out)
	}
	crossing.roundTrip(t, 2)
	fmt.Fprintf(crossing.stdin, "exit 5\n")
	select {
	case err := <-crossing.done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
			t.Errorf("the crossing shell ended with %v, want exit 5", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the crossing shell did not exit")
	}
	if got := middleOf(c, "session resumed", entry); len(got) == 0 && !slices.Contains(c.ProxyLogValues("session resumed", "path"), entry+">"+a.ID()) {
		t.Errorf("the crossing shell never resumed; resumed paths %v", c.ProxyLogValues("session resumed", "path"))
	}
}

// TestRollingRestart restarts every proxy of a 3-proxy cluster, one after
// another (SIGTERM: drain; then the same proxy again, same id and data),
// under load: new sessions all along through the proxies not restarting,
// and a shell entered through each proxy. No new session fails; a shell
// goes on through every restart but its own entry proxy's, which ends it
// with the proxy's warning.
func TestRollingRestart(t *testing.T) {
	c := New(t, Options{
		Proxies: 3,
		Runner:  RunProcesses,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}, {Name: "echo", Kind: "tcp", Addr: startEcho(t)}}},
		Agent:   func(_ string, cfg *agent.Config) { cfg.ConnectionCount = 2 },
	})
	a := c.Agents["agent-1"]
	c.WaitFor("two tunnels", func() bool { return distinctTunnels(a, 2) })
	c.WaitRoutable("node1")
	c.WaitRoutable("echo")

	ids := make([]string, len(c.Proxies))
	shells := map[string]*shell{}
	for i, p := range c.Proxies {
		ids[i] = p.ID()
		shells[p.ID()] = startShell(t, c, p.ID(), "node1")
		shells[p.ID()].roundTrip(t, 0)
	}

	// New sessions, one after another, each through the next proxy that
	// is not restarting.
	var mu sync.Mutex
	restarting := ""
	inFlight := map[string]int{} // new sessions under way, by entry proxy
	var failures []string
	sessionsRun := 0
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	var stopLoad sync.Once
	endLoad := func() { stopLoad.Do(func() { close(stop) }); <-loadDone }
	t.Cleanup(endLoad) // also when the test fails half way
	go func() {
		defer close(loadDone)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			cfg := c.SSHConfig
			var entries []string
			for _, id := range ids {
				if id != restarting {
					entries = append(entries, id)
				}
			}
			entry := entries[n%len(entries)]
			inFlight[entry]++
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, "-W", "echo:7", entry)
			cmd.Stderr = &stderr
			err := cmd.Run()
			cancel()
			mu.Lock()
			sessionsRun++
			inFlight[entry]--
			mu.Unlock()
			// ssh -W with no stdin: the session opens and ends at once; a
			// refusal or a broken path is a non-zero exit.
			if err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("through %s: %v: %s", entry, err, strings.TrimSpace(stderr.String())))
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	for i, id := range ids {
		// Out of the new sessions' rotation, as a load balancer takes a
		// proxy that turned not ready, before its SIGTERM: a session
		// that reaches a draining proxy is refused ("connect again").
		mu.Lock()
		restarting = id
		mu.Unlock()
		c.WaitFor("no new session under way through "+id, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return inFlight[id] == 0
		})
		c.StopProxy(id)
		// Its own shell ended, told why; every other one goes on.
		select {
		case <-shells[id].done:
		case <-time.After(30 * time.Second):
			t.Fatalf("the shell that entered through %s did not end with it", id)
		}
		shells[id].mu.Lock()
		told := strings.Contains(shells[id].out.String(), "is shutting down")
		shells[id].mu.Unlock()
		if !told {
			t.Errorf("the shell that entered through %s was not told it would end", id)
		}
		for other, sh := range shells {
			if other != id && slices.Index(ids, other) > i {
				sh.roundTrip(t, 10*(i+1))
			}
		}
		c.AddProxy(i + 1)
		c.WriteSSHConfig()
		c.WaitMembers(len(ids))
		c.WaitRoutable("echo")
		c.WaitFor("two tunnels again", func() bool { return distinctTunnels(a, 2) })
		mu.Lock()
		restarting = ""
		mu.Unlock()
		t.Logf("%s restarted", id)
	}
	endLoad()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d new sessions during the rolling restart", sessionsRun)
	if sessionsRun == 0 {
		t.Fatal("no new session ran")
	}
	for _, f := range failures {
		t.Errorf("a new session failed: %s", f)
	}
}

// TestSecondSIGTERMEndsTheGrace: a proxy drains with a long shutdown
// grace while a session that entered through it runs; a second SIGTERM
// ends the session and the proxy at once.
func TestSecondSIGTERMEndsTheGrace(t *testing.T) {
	c := New(t, Options{
		Proxies:       2,
		Runner:        RunProcesses,
		ShutdownGrace: time.Minute,
		Agents:        map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}},
	})
	c.WaitRoutable("node1")
	p := c.Proxies[1]
	sh := startShell(t, c, p.ID(), "node1")
	sh.roundTrip(t, 1)
	proc := p.H.Proc
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the drain under way", func() bool { return c.ProxyLogCount(proxy.DrainingMsg) == 1 })
	if proc.Exited() {
		t.Fatal("the proxy exited before its grace, with a session running")
	}
	second := time.Now()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the proxy's exit after the second SIGTERM", proc.Exited)
	t.Logf("exited %s after the second SIGTERM (grace %s)", time.Since(second).Round(time.Millisecond), time.Minute)
	select {
	case <-sh.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the session did not end with its proxy")
	}
	// The harness stops it at cleanup; it is gone already.
	c.Proxies = c.Proxies[:1]
	c.WaitMembers(1)
}
