package main

import (
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/storage/audit"
)

// TestDetachedSessionEndsWithAnAuditRecord: the agent of a live session is
// killed (SIGKILL: no goodbye), so no path to it can come back. The
// session ends after session.resume_timeout, and its session.end record
// says so.
func TestDetachedSessionEndsWithAnAuditRecord(t *testing.T) {
	const wait = 2 * time.Second
	m := newMultiWith(t, []string{"local"}, "", "session: {resume_timeout: 2s}\n")
	echo := startEchoServer(t)
	ag := m.startTCPAgent("agent-1", "echo", echo, 0)
	waitFor(t, "echo routed", func() bool {
		out, _, _ := m.ssh(m.proxies[0].ID, "ls")
		return strings.Contains(out, "1/1")
	})
	c := m.sshClient(t, m.proxies[0])
	defer c.Close()
	conn, err := c.Dial("tcp", "echo:7")
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
	ag.cmd.Process.Signal(syscall.SIGKILL)
	<-ag.done
	ag.done <- nil
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
	waitFor(t, "the session.end record", func() bool {
		out, _, _ := m.ssh(m.proxies[0].ID, "audit", "--since", "1h", "--json")
		for line := range strings.Lines(out) {
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
	t.Logf("session.end: %s", end.Error)
}

// TestProxyDrainCommand: `warren proxy drain` makes the proxy it reaches
// drain and exit, as SIGTERM does; a user without the admin role cannot.
func TestProxyDrainCommand(t *testing.T) {
	m := newMulti(t, 2, "")
	m.waitMembers(2, m.proxies)
	p := m.proxies[1]
	out, errs, code := runWarren(t, "proxy", "drain", "--proxy", p.User, "-i", filepath.Join(m.dir, "alice"))
	if code != 0 || !strings.Contains(out, "draining") {
		t.Fatalf("warren proxy drain: code %d, stdout %q, stderr %q", code, out, errs)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !p.Proc.Exited() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !p.Proc.Exited() {
		t.Fatal("the drained proxy did not exit")
	}
	if err := p.Proc.Err(); err != nil {
		t.Errorf("the drained proxy exited with %v", err)
	}
	m.waitMembers(1, m.proxies[:1])
}
