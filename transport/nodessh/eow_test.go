package nodessh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// eowBound bounds a pipeline whose reader stopped early. Without eow
// handling it never ends, so any bound tells; this one is generous for a
// loaded machine.
const eowBound = 30 * time.Second

// TestOpenSSHEOW runs `ssh node yes | head -1` with the stock client
// through a shell pipeline: once head has exited the client sends
// eow@openssh.com, and the command must end, the client with it, and no
// `yes` may be left running.
func TestOpenSSHEOW(t *testing.T) {
	requireBinaries(t, "sh", "head")
	h := newHarness(t)
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"exec", nil},
		{"pty", []string{"-tt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := "warren-eow-" + randomHex(t)
			args := h.sshArgs(h.key, h.login, tc.extra, "yes "+marker)
			ctx, cancel := context.WithTimeout(context.Background(), eowBound)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `"$@" </dev/null | head -n 1`, "sh", "ssh"}, args...)...)
			cmd.Env = []string{"HOME=" + h.home, "PATH=" + os.Getenv("PATH"), "TERM=vt100", "LANG=C"}
			cmd.Dir = h.dir
			cmd.WaitDelay = 5 * time.Second
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("`ssh node yes | head -1` did not end within %s (stdout %q, stderr %q)", eowBound, stdout.String(), stderr.String())
			}
			if err != nil {
				t.Errorf("pipeline: %v (stderr %q)", err, stderr.String())
			}
			if got := strings.TrimRight(stdout.String(), "\r\n"); got != marker {
				t.Errorf("stdout = %q, want %q", stdout.String(), marker+"\n")
			}
			waitNoProcess(t, marker)
			h.waitLog(t, "client reads no more output (eow)")
		})
	}
}

// TestEOW sends eow@openssh.com from the x/crypto client, which never
// sends it by itself, and checks how the job ends: with pipes its stdout
// is closed (SIGPIPE on its next write) while its stderr still drains,
// unsent; under a PTY the terminal is hung up.
func TestEOW(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	for _, tc := range []struct {
		name    string
		pty     bool
		command string // prints the pid to wait for on its first line
		want    string // how the job must end, as exitOf reports it
	}{
		{"pipes", false, `echo $$; exec yes`, "signal PIPE"},
		// The shell outlives yes; its last message goes to a stderr that
		// is still read (as under sshd its write succeeds) but not sent.
		{"stderr after eow", false, `echo $$; yes; echo after >&2; exit 3`, "status 3"},
		{"pty", true, `echo $$; exec yes`, "signal HUP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, reqs, err := c.OpenChannel("session", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if tc.pty {
				msg := ptyRequestMsg{Term: "xterm", Columns: 80, Rows: 24}
				if ok, err := ch.SendRequest("pty-req", true, ssh.Marshal(msg)); !ok || err != nil {
					t.Fatalf("pty-req: %v, %v", ok, err)
				}
			}
			if ok, err := ch.SendRequest("exec", true, ssh.Marshal(execMsg{Command: tc.command})); !ok || err != nil {
				t.Fatalf("exec: %v, %v", ok, err)
			}
			out := bufio.NewReader(ch)
			pid, err := strconv.Atoi(readLine(t, out))
			if err != nil {
				t.Fatal(err)
			}
			// The job is writing: a window's worth has to be consumed
			// before it blocks, so wait for that much to be sure.
			if _, err := io.CopyN(io.Discard, out, 4<<20); err != nil {
				t.Fatalf("read the job's output: %v", err)
			}
			if _, err := ch.SendRequest("eow@openssh.com", false, nil); err != nil {
				t.Fatal(err)
			}
			// As OpenSSH's client does, keep consuming what was in
			// flight, so the server is never held up by the window.
			drained := make(chan []byte, 1)
			go func() { _, _ = io.Copy(io.Discard, out) }()
			go func() { b, _ := io.ReadAll(ch.Stderr()); drained <- b }()

			got := exitOf(t, reqs)
			if got != tc.want {
				t.Errorf("job ended with %s, want %s", got, tc.want)
			}
			waitGone(t, pid)
			select {
			case b := <-drained:
				if len(b) > 0 {
					t.Errorf("stderr after eow reached the client: %q", b)
				}
			case <-time.After(eowBound):
				t.Error("the channel's stderr never ended")
			}
		})
	}
}

// exitOf waits for the channel's exit report and its close.
func exitOf(t *testing.T, reqs <-chan *ssh.Request) string {
	t.Helper()
	timeout := time.NewTimer(eowBound)
	defer timeout.Stop()
	got := "no exit report"
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				return got
			}
			switch req.Type {
			case "exit-status":
				var m exitStatusMsg
				if err := ssh.Unmarshal(req.Payload, &m); err == nil {
					got = fmt.Sprintf("status %d", m.Status)
				}
			case "exit-signal":
				var m exitSignalMsg
				if err := ssh.Unmarshal(req.Payload, &m); err == nil {
					got = "signal " + m.Signal
				}
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		case <-timeout.C:
			t.Fatalf("the job did not end within %s of eow (so far: %s)", eowBound, got)
		}
	}
}

// waitNoProcess waits until no live process has marker in its command
// line.
func waitNoProcess(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesWith(marker)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v with %q in their command line are still running", pids, marker)
			return
		}
		time.Sleep(10 * time.Millisecond) // polling /proc: no event to wait on
	}
}

// processesWith lists the processes whose command line holds marker
// (zombies have none).
func processesWith(marker string) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(marker)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		pids = append(pids, pid)
	}
	return pids
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
