package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/storage/recordings"
)

// requireAsciinema returns the path of stock asciinema, or skips t; with
// WARREN_REQUIRE_ASCIINEMA set (.ci/run installs it) a missing asciinema
// fails t instead.
func requireAsciinema(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("asciinema")
	if err == nil {
		return path
	}
	msg := "asciinema is not installed (apt-get install asciinema)"
	if os.Getenv("WARREN_REQUIRE_ASCIINEMA") != "" {
		t.Fatalf("%s (WARREN_REQUIRE_ASCIINEMA is set)", msg)
	}
	t.Skip(msg)
	return ""
}

// castOutput is what a recording's terminal showed, and whether it holds
// input events.
func castOutput(t *testing.T, cast []byte) (out string, inputs int) {
	t.Helper()
	rd, err := asciicast.NewReader(bytes.NewReader(cast), asciicast.Limits{})
	if err != nil {
		t.Fatalf("recording: %v", err)
	}
	var b strings.Builder
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return b.String(), inputs
		}
		if err != nil {
			t.Fatalf("recording: %v", err)
		}
		switch ev.Code {
		case asciicast.Output:
			b.WriteString(ev.Data)
		case asciicast.Input:
			inputs++
		}
	}
}

// recordingsOn lists what `recordings ls --json` says on proxy (extra:
// more flags, like --local).
func (m *multi) recordingsOn(proxy string, extra ...string) []recordings.Meta {
	out, _, code := m.ssh(append([]string{proxy, "recordings", "ls", "--json"}, extra...)...)
	if code != 0 {
		return nil
	}
	var list []recordings.Meta
	for line := range strings.Lines(out) {
		var r recordings.Meta
		if json.Unmarshal([]byte(line), &r) == nil {
			list = append(list, r)
		}
	}
	return list
}

// TestRecordedSessionReplays is the recording acceptance test: a session
// through stock `ssh -tt` is recorded at the node; a proxy the agent
// uploads to is killed during the session; the recording reaches the
// proxy that stayed at once and the killed one once it is back, whole
// (every byte the user saw); stock asciinema replays it; the session's
// audit record names it; `warren play` plays it.
func TestRecordedSessionReplays(t *testing.T) {
	asciinema := requireAsciinema(t)
	m := newMulti(t, 2, "")
	m.waitMembers(2, m.proxies)
	agent := m.startAgent("agent-1", "node1", 0, "tunnel_strategy: agent_mesh\nrecording: {retry_min: 100ms, retry_max: 500ms}\n")
	waitFor(t, "node1 reachable and the agent on both proxies", func() bool {
		out, _, _ := m.ssh("node1", "echo up")
		st := localAgents(m.status(m.proxies[0]))
		return out == "up\n" && st["proxy-1"] == 1 && st["proxy-2"] == 1
	})

	// The session: UTF-8 on both sides of the kill, a line typed, a burst.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", m.cfg, "-o", "BatchMode=yes", "-tt", "node1",
		`printf 'héllo wörld €𝄞\n'; read x; printf 'got %s\n' "$x"; seq 1 300; printf 'bye ✓\n'`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := newBuf(), newBuf()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session's first line", func() bool { return strings.Contains(stdout.String(), "héllo") })
	killed := m.proxies[1]
	killed.Proc.Kill()
	waitFor(t, "proxy-2 gone", killed.Proc.Exited)
	if _, err := io.WriteString(stdin, "typed-secret\n"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ssh -tt: %v; stderr %q", err, stderr.String())
	}
	saw := stdout.String()
	if !strings.Contains(saw, "got typed-secret") || !strings.Contains(saw, "bye ✓") {
		t.Fatalf("the session did not run to its end: %q", saw)
	}

	// proxy-1 (it stayed) has it at once: the agent uploads at the end.
	var rec recordings.Meta
	waitFor(t, "the recording on proxy-1", func() bool {
		l := m.recordingsOn("proxy-1", "--local", "--resource", "node1")
		if len(l) == 1 {
			rec = l[0]
		}
		return len(l) == 1
	})
	if rec.User != "alice" || rec.Resource != "node1" || rec.Agent == "" || rec.Login != m.me || rec.Input {
		t.Errorf("recording metadata %+v: want user alice, resource node1, login %s, no input", rec, m.me)
	}
	cast, errs, code := m.ssh("proxy-1", "recordings", "get", rec.ID)
	if code != 0 {
		t.Fatalf("recordings get: code %d stderr %q", code, errs)
	}
	got, inputs := castOutput(t, []byte(cast))
	if got != saw {
		t.Errorf("recorded output differs from what ssh showed:\nrecorded %q\nssh      %q", got, saw)
	}
	if inputs != 0 {
		t.Errorf("%d input events recorded without a role asking for them", inputs)
	}
	file := filepath.Join(t.TempDir(), "session.cast")
	if err := os.WriteFile(file, []byte(cast), 0o600); err != nil {
		t.Fatal(err)
	}
	// asciinema 2.2's cat reads /dev/tty, which a test may lack; play
	// writes the same bytes at 100 times the pace.
	if out, errs, code := runCmd(t, asciinema, "play", "-s", "100", file); code != 0 || out != saw {
		t.Errorf("asciinema play: code %d stderr %q\nout %q\nwant %q", code, errs, out, saw)
	}
	out, errs, code := runWarren(t, "play", rec.ID, "--speed", "1000", "--proxy", m.proxies[0].User, "-i", filepath.Join(m.dir, "alice"))
	if code != 0 || out != saw {
		t.Errorf("warren play: code %d stderr %q\nout %q\nwant %q", code, errs, out, saw)
	}

	// The session's end in the audit log links to it.
	out, _, _ = m.ssh("proxy-1", "audit", "--since", "1h", "--json")
	linked := false
	for line := range strings.Lines(out) {
		var ev audit.Event
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Type == "session.end" && ev.Recording == rec.Session {
			linked = true
		}
	}
	if !linked || rec.Session != rec.ID {
		t.Errorf("no session.end record names recording %s (session %s):\n%s", rec.ID, rec.Session, out)
	}

	// proxy-2 comes back (same ports) and receives the same bytes.
	killed.FixedPorts = true
	if err := m.h.StartProxy(t.Context(), killed, func(config string) harness.Command {
		return harness.Command{Bin: warrenBin, Args: []string{"proxy", "--config", config}}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killed.Proc.Kill()
		if t.Failed() {
			log, _ := os.ReadFile(killed.Proc.Log)
			t.Logf("restarted proxy-2's log:\n%s", log)
			t.Logf("agent's output:\n%s", agent.stdout.String())
		}
	})
	waitFor(t, "the recording on proxy-2 after its restart", func() bool {
		return len(m.recordingsOn("proxy-2", "--local", "--resource", "node1")) == 1
	})
	again, _, code := m.ssh("proxy-2", "recordings", "get", rec.ID)
	if code != 0 || again != cast {
		t.Errorf("proxy-2 holds other bytes (code %d): %d bytes, want %d", code, len(again), len(cast))
	}
}
