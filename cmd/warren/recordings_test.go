package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/storage/recordings"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
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
// through stock `ssh -tt` is recorded at the node. The two proxies the
// agent uploads to besides the entry proxy are killed during the session;
// the recording reaches the entry proxy at once and a second proxy once
// they are back, whole (every byte the user saw); the third serves it
// from a peer; it survives the entry proxy's loss; stock asciinema
// replays it; the session's audit record names it; `warren play` plays
// it.
func TestRecordedSessionReplays(t *testing.T) {
	asciinema := requireAsciinema(t)
	m := newMulti(t, 3, "")
	m.waitMembers(3, m.proxies)
	m.startAgent("agent-1", "node1", 0, "tunnel_strategy: agent_mesh\nrecording: {retry_min: 100ms, retry_max: 500ms}\n")
	waitFor(t, "node1 reachable and the agent on every proxy", func() bool {
		out, _, _ := m.ssh("node1", "echo up")
		st := localAgents(m.status(m.proxies[0]))
		return out == "up\n" && st["proxy-1"] == 1 && st["proxy-2"] == 1 && st["proxy-3"] == 1
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
	killed := m.proxies[1:]
	for _, p := range killed {
		p.Proc.Kill()
		waitFor(t, p.ID+" gone", p.Proc.Exited)
	}
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

	// proxy-2 and proxy-3 come back (same ports): the agent, which kept
	// the recording for a second replica, gives it to one of them.
	for _, p := range killed {
		p.FixedPorts = true
		if err := m.h.StartProxy(t.Context(), p, func(config string) harness.Command {
			return harness.Command{Bin: warrenBin, Args: []string{"proxy", "--config", config}}
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.Proc.Kill()
			if t.Failed() {
				log, _ := os.ReadFile(p.Proc.Log)
				t.Logf("restarted %s's log:\n%s", p.ID, log)
			}
		})
	}
	var holder, other *proxyProc
	waitFor(t, "the recording on proxy-2 or proxy-3 after their restart", func() bool {
		for i, p := range killed {
			if len(m.recordingsOn(p.ID, "--local", "--resource", "node1")) == 1 {
				holder, other = p, killed[1-i]
				return true
			}
		}
		return false
	})
	again, _, code := m.ssh(holder.ID, "recordings", "get", rec.ID)
	if code != 0 || again != cast {
		t.Errorf("%s holds other bytes (code %d): %d bytes, want %d", holder.ID, code, len(again), len(cast))
	}
	m.waitMembers(3, m.proxies)
	// The proxy without it lists it (every proxy's recordings) and
	// serves it from a peer.
	if l := m.recordingsOn(other.ID, "--resource", "node1"); len(l) != 1 || l[0].ID != rec.ID {
		t.Errorf("%s lists %+v, want recording %s", other.ID, l, rec.ID)
	}
	if again, errs, code := m.ssh(other.ID, "recordings", "get", rec.ID); code != 0 || again != cast {
		t.Errorf("%s, which holds no copy, served %d bytes (code %d, stderr %q), want the %d stored", other.ID, len(again), code, errs, len(cast))
	}

	// The entry proxy is lost for good: the recording is still served.
	m.proxies[0].Proc.Kill()
	waitFor(t, "proxy-1 gone", m.proxies[0].Proc.Exited)
	m.waitMembers(2, killed)
	if again, errs, code := m.ssh(other.ID, "recordings", "get", rec.ID); code != 0 || again != cast {
		t.Errorf("after proxy-1's loss %s served %d bytes (code %d, stderr %q), want the %d stored", other.ID, len(again), code, errs, len(cast))
	}
}

// recordingAgent starts an agent serving node1 on c's proxy with extra
// YAML (a recording section), and waits until node1 is reachable.
func (c *trustCluster) recordingAgent(extra string) *proc {
	c.t.Helper()
	a := &harness.Agent{Name: "agent-1", Proxies: []string{c.tunnel}, Token: c.token, Extra: extra + "resources:\n  - {name: node1, kind: ssh}\n"}
	if err := c.h.WriteAgentConfig(a); err != nil {
		c.t.Fatal(err)
	}
	p := start(c.t, "agent", "--config", a.Config)
	waitFor(c.t, "node1 reachable", func() bool { out, _, _ := sshRun(c.t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	return p
}

// recording waits for the one recording of user on c's proxy and
// returns it with its cast.
func (c *trustCluster) recording(user string) (recordings.Meta, []byte) {
	c.t.Helper()
	var rec recordings.Meta
	waitFor(c.t, user+"'s recording", func() bool {
		out, _, code := sshRun(c.t, c.sshConfig, "proxy-1", "recordings", "ls", "--json", "--user", user)
		if code != 0 {
			return false
		}
		n := 0
		for line := range strings.Lines(out) {
			if json.Unmarshal([]byte(line), &rec) == nil {
				n++
			}
		}
		return n == 1
	})
	cast, errs, code := sshRun(c.t, c.sshConfig, "proxy-1", "recordings", "get", rec.ID)
	if code != 0 {
		c.t.Fatalf("recordings get %s: code %d stderr %q", rec.ID, code, errs)
	}
	return rec, []byte(cast)
}

// TestRecordingRoleOptions: input is recorded only for a role with
// record_input; a role with require_recording ends the session when the
// node's spool is full, while a session without it goes on unrecorded
// past that point; only a role with allow.recordings lists recordings.
func TestRecordingRoleOptions(t *testing.T) {
	c := newTrustCluster(t)
	// A spool of 64 KiB: the strict session's output fills it.
	c.recordingAgent("recording: {spool_max_bytes: 65536}\n")
	for name, opts := range map[string]string{"typed": "record_input: true\n", "strict": "require_recording: true\n", "plain": ""} {
		role := filepath.Join(c.dir, name+".yaml")
		os.WriteFile(role, []byte(fmt.Sprintf("name: %s\n%sallow:\n  logins: [%s]\n  names: [node1]\n", name, opts, c.me)), 0o644)
		c.adminOK("role", "create", "-f", role)
	}
	bob := c.userConfig("bob", "typed", []string{c.me}, "node1")
	carol := c.userConfig("carol", "strict", []string{c.me}, "node1")
	dave := c.userConfig("dave", "plain", []string{c.me}, "node1")

	// bob types a line: his role records it.
	out, errs, code := runCmdInput(t, "hunter2\n", "ssh", "-F", bob, "-o", "BatchMode=yes", "-tt", "node1", `read x; echo "got $x"`)
	if code != 0 || !strings.Contains(out, "got hunter2") {
		t.Fatalf("bob's session: code %d out %q stderr %q", code, out, errs)
	}
	_, cast := c.recording("bob")
	if _, inputs := castOutput(t, cast); inputs == 0 || !strings.Contains(string(cast), `"i","hunter2`) {
		t.Errorf("bob's input was not recorded (record_input): %s", cast)
	}
	// dave's role asks for nothing: the same session keeps no input.
	out, errs, code = runCmdInput(t, "hunter3\n", "ssh", "-F", dave, "-o", "BatchMode=yes", "-tt", "node1", `read x; echo "got $x"`)
	if code != 0 || !strings.Contains(out, "got hunter3") {
		t.Fatalf("dave's session: code %d out %q stderr %q", code, out, errs)
	}
	daveFirst, cast := c.recording("dave")
	if _, inputs := castOutput(t, cast); inputs != 0 {
		t.Errorf("dave's input was recorded without record_input: %s", cast)
	}
	// dave's roles do not allow listing recordings.
	_, errs, code = sshRun(t, dave, "proxy-1", "recordings", "ls")
	if code == 0 || !strings.Contains(errs, "recordings needs a role that allows it") {
		t.Errorf("dave listed recordings: code %d stderr %q", code, errs)
	}

	// More output than the spool holds. dave's session runs to its end,
	// its recording stops where the spool filled.
	const flood = `i=0; while [ $i -lt 4000 ]; do echo "line $i of the flood"; i=$((i+1)); done; echo END-OF-FLOOD`
	out, errs, code = sshRun(t, dave, "-tt", "node1", flood)
	if code != 0 || !strings.Contains(out, "END-OF-FLOOD") {
		t.Fatalf("dave's flood: code %d, stderr %q, tail %q; want it to run to its end", code, errs, tail(out))
	}
	var flooded recordings.Meta
	waitFor(t, "dave's second recording, uploaded", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "recordings", "ls", "--json", "--user", "dave")
		for line := range strings.Lines(out) {
			if json.Unmarshal([]byte(line), &flooded) == nil && flooded.ID != daveFirst.ID {
				return true
			}
		}
		return false
	})
	fcast, _, _ := sshRun(t, c.sshConfig, "proxy-1", "recordings", "get", flooded.ID)
	if got, _ := castOutput(t, []byte(fcast)); !strings.Contains(got, "line 1 of the flood") || strings.Contains(got, "END-OF-FLOOD") {
		t.Errorf("dave's flood recording should stop where the spool filled: %d bytes of output, tail %q", len(got), tail(got))
	}
	if !flooded.Truncated || !strings.Contains(fcast, "recording stopped: the node could not write it") {
		t.Errorf("dave's flood recording does not say it stopped (truncated %v): tail %q", flooded.Truncated, tail(fcast))
	}
	spool := filepath.Join(c.dir, "agent-1", "recordings")
	waitFor(t, "the agent's spool emptied", func() bool {
		entries, err := os.ReadDir(spool)
		return err == nil && len(entries) == 0
	})
	// carol's role requires recording: the same flood ends her session.
	out, errs, code = sshRun(t, carol, "-tt", "node1", flood)
	if code == 0 || strings.Contains(out, "END-OF-FLOOD") {
		t.Fatalf("carol's flood ran to its end (code %d) although her recording could not be written", code)
	}
	if !strings.Contains(out+errs, "role strict requires recording") || !strings.Contains(out+errs, "spool is full") {
		t.Errorf("carol was not told why her session ended: stderr %q, tail %q", errs, tail(out))
	}
	for line := range strings.Lines(out + errs) {
		if strings.Contains(line, "warren:") {
			t.Logf("carol read: %s", strings.TrimSpace(line))
		}
	}
}

func tail(s string) string {
	if len(s) > 300 {
		return "…" + s[len(s)-300:]
	}
	return s
}

// upload offers cast as recording id with ticket over tun.
func upload(t *testing.T, tun *revtunnel.ClientConn, id, ticket string, cast []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	sum := sha256.Sum256(cast)
	return tun.UploadRecording(ctx, revtunnel.RecordingOffer{ID: id, Ticket: ticket, Size: int64(len(cast)), SHA256: hex.EncodeToString(sum[:])}, bytes.NewReader(cast))
}

// TestAttackRecordingUpload: an agent (joined with the cluster's token,
// so holding a valid certificate) cannot store a recording for a session
// it did not serve: not with a ticket of its own making, not with another
// agent's ticket, not under another session's id; a malformed cast is
// refused with a clear error; the real recording stays as it was.
func TestAttackRecordingUpload(t *testing.T) {
	c := newTrustCluster(t)
	c.recordingAgent("")
	if out, errs, code := runCmdInput(t, "", "ssh", "-F", c.sshConfig, "-o", "BatchMode=yes", "-tt", "node1", "echo the real session"); code != 0 || !strings.Contains(out, "the real session") {
		t.Fatalf("alice's session: code %d out %q stderr %q", code, out, errs)
	}
	real, realCast := c.recording("alice")

	signer, _, resp := c.joinAs("evil", c.token, nil)
	tun, _ := c.tunnelAs(resp.AgentID, signer, nil)
	fake := []byte(`{"version":2,"width":80,"height":24}` + "\n" + `[0.1,"o","forged"]` + "\n")
	auth, err := pki.Load(c.auth)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(signer ssh.Signer, tk revtunnel.RecordingTicket) string {
		s, err := revtunnel.SignTicket(signer, tk)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	own, _, _ := pki.GenerateKey()
	cases := []struct {
		name, id, ticket string
		cast             []byte
		want             string
	}{
		{"its own ticket", real.ID, sign(own, revtunnel.RecordingTicket{Session: real.Session, Agent: resp.AgentID, User: "alice", Resource: "node1"}), fake,
			"not signed by this cluster's proxies"},
		{"another agent's ticket", real.ID, sign(auth.HostCA, revtunnel.RecordingTicket{Session: real.Session, Agent: real.Agent, User: "alice", Resource: "node1"}), fake,
			"its ticket was issued to another agent"},
		{"another session's id", real.ID, sign(auth.HostCA, revtunnel.RecordingTicket{Session: "0123456789abcdef", Agent: resp.AgentID, User: "alice", Resource: "node1"}), fake,
			"is not of session 0123456789abcdef"},
		{"no ticket", real.ID, "", fake, "recording ticket"},
		{"a malformed cast", "0123456789abcdef", sign(auth.HostCA, revtunnel.RecordingTicket{Session: "0123456789abcdef", Agent: resp.AgentID, User: "alice", Resource: "node1"}), []byte("rm -rf /\n"),
			"not a valid asciicast v2 file"},
		{"an id with a path", "../../audit", "", fake, "invalid recording id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := upload(t, tun, tc.id, tc.ticket, tc.cast)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a refusal saying %q", err, tc.want)
			}
		})
	}
	again, cast := c.recording("alice")
	if again.SHA256 != real.SHA256 || !bytes.Equal(cast, realCast) || again.Agent != real.Agent {
		t.Errorf("the real recording changed: %+v", again)
	}
	out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "recordings", "ls", "--json")
	if strings.Count(out, "\n") != 1 {
		t.Errorf("recordings after the attack:\n%s\nwant only alice's", out)
	}
}

// TestRecordingCopiedAndSpoolSurvivesRestart: an agent with one tunnel
// (the default) uploads a recording once; the proxy that took it has a
// peer copy it, so both hold the same bytes, and the agent's spool is
// emptied. An agent killed (SIGKILL) during a session keeps what it had
// recorded: restarted, it closes the recording with a marker and uploads
// it.
func TestRecordingCopiedAndSpoolSurvivesRestart(t *testing.T) {
	m := newMultiWith(t, []string{"local", "local"}, "", "session: {resume_timeout: 2s}\n")
	m.waitMembers(2, m.proxies)
	const agentYAML = "recording: {retry_min: 100ms, retry_max: 500ms}\n"
	agent := m.startAgent("agent-1", "node1", 0, agentYAML)
	waitFor(t, "node1 reachable", func() bool { out, _, _ := m.ssh("node1", "echo up"); return out == "up\n" })
	out, errs, code := m.ssh("-tt", "node1", "echo copied-to-a-peer")
	if code != 0 || !strings.Contains(out, "copied-to-a-peer") {
		t.Fatalf("session: code %d out %q stderr %q", code, out, errs)
	}
	var on [2][]recordings.Meta
	waitFor(t, "the recording on both proxies", func() bool {
		for i, p := range m.proxies {
			on[i] = m.recordingsOn(p.ID, "--local")
		}
		return len(on[0]) == 1 && len(on[1]) == 1
	})
	if on[0][0].ID != on[1][0].ID || on[0][0].SHA256 != on[1][0].SHA256 || on[1][0].User != "alice" {
		t.Errorf("the proxies hold %+v and %+v, want one recording, the same", on[0][0], on[1][0])
	}
	spool := filepath.Join(m.dir, "agent-1", "recordings")
	waitFor(t, "the agent's spool emptied", func() bool {
		entries, err := os.ReadDir(spool)
		return err == nil && len(entries) == 0
	})

	// A session whose agent is killed: what was recorded is on disk.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", m.cfg, "-o", "BatchMode=yes", "-tt", "node1", `printf 'before the kill ✓\n'; sleep 60`)
	stdout := newBuf()
	cmd.Stdout, cmd.Stdin = stdout, strings.NewReader("")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	waitFor(t, "the session's output", func() bool { return strings.Contains(stdout.String(), "before the kill ✓") })
	agent.cmd.Process.Kill()
	<-agent.done
	agent.done <- nil
	m.startAgent("agent-1", "node1", 0, agentYAML)
	var rec recordings.Meta
	waitFor(t, "the killed session's recording, uploaded after the restart", func() bool {
		for _, r := range m.recordingsOn("proxy-1", "--local") {
			if r.ID != on[0][0].ID {
				rec = r
				return true
			}
		}
		return false
	})
	cast, errs, code := m.ssh("proxy-1", "recordings", "get", rec.ID)
	if code != 0 {
		t.Fatalf("recordings get: code %d stderr %q", code, errs)
	}
	got, _ := castOutput(t, []byte(cast))
	if !strings.Contains(got, "before the kill ✓") || !strings.Contains(cast, "the agent stopped during this session") {
		t.Errorf("the recovered recording lacks the output or the marker:\n%s", cast)
	}
}

// TestPlay: warren play writes every output event, in order, and nothing
// else; --idle cuts pauses (a cast with an hour's pause plays at once).
func TestPlay(t *testing.T) {
	cast := `{"version":2,"width":80,"height":24}` + "\n" +
		`[0.01,"o","one "]` + "\n" + `[0.02,"i","typed"]` + "\n" + `[0.03,"r","100x30"]` + "\n" +
		`[3600.0,"o","two ✓"]` + "\n" + `[3600.0,"m","note"]` + "\n"
	var out bytes.Buffer
	if err := play(t.Context(), strings.NewReader(cast), &out, 1, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if out.String() != "one two ✓" {
		t.Errorf("played %q, want %q", out.String(), "one two ✓")
	}
	err := play(t.Context(), strings.NewReader(`{"version":1}`), io.Discard, 1, 0)
	if err == nil || !strings.Contains(err.Error(), "only asciicast version 2") {
		t.Errorf("a version 1 cast: got %v", err)
	}
	// Bad flags get one clear sentence.
	for _, args := range [][]string{{"play"}, {"play", "x", "--speed", "0"}, {"play", "../x"}} {
		_, errs, code := runWarren(t, args...)
		if code == 0 || !strings.Contains(errs, "warren") {
			t.Errorf("warren %v: code %d stderr %q", args, code, errs)
		}
	}
}
