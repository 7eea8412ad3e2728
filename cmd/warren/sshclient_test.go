package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
)

// promptly bounds how long `warren ssh` may take to end after a signal.
// It is generous for a race-enabled binary on a loaded machine; the
// client normally ends within milliseconds.
const promptly = 10 * time.Second

// TestSSHTTYFlags: -t, -tt and -T combine as in OpenSSH (the last of -t
// and -T wins, a second -t forces), flags stop at the resource, and the
// PTY decision follows ssh's rules.
func TestSSHTTYFlags(t *testing.T) {
	t.Parallel()
	parse := func(args ...string) (ttyRequest, []string) {
		t.Helper()
		fs := flag.NewFlagSet("ssh", flag.ContinueOnError)
		var req ttyRequest
		fs.Var(ttyFlag{&req, ttyYes}, "t", "")
		fs.Var(ttyFlag{&req, ttyForce}, "tt", "")
		fs.Var(ttyFlag{&req, ttyNo}, "T", "")
		if err := parseUntilCommand(fs, args); err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		return req, fs.Args()
	}
	for _, tc := range []struct {
		args []string
		want ttyRequest
		rest string
	}{
		{[]string{"node1"}, ttyAuto, "node1"},
		{[]string{"-t", "node1", "ls", "-la"}, ttyYes, "node1 ls -la"},
		{[]string{"-t", "-t", "node1"}, ttyForce, "node1"},
		{[]string{"-tt", "node1"}, ttyForce, "node1"},
		{[]string{"-T", "node1", "-t"}, ttyNo, "node1 -t"},
		{[]string{"-t", "-T", "node1"}, ttyNo, "node1"},
		{[]string{"-T", "-t", "node1"}, ttyYes, "node1"},
	} {
		req, rest := parse(tc.args...)
		if req != tc.want || strings.Join(rest, " ") != tc.rest {
			t.Errorf("%q: got request %d args %q, want %d %q", tc.args, req, rest, tc.want, tc.rest)
		}
	}
	for _, tc := range []struct {
		req              ttyRequest
		command, term    bool
		wantPTY, wantMsg bool
	}{
		{ttyAuto, false, true, true, false},
		{ttyAuto, false, false, false, true}, // ssh host </dev/null: warns
		{ttyAuto, true, true, false, false},
		{ttyAuto, true, false, false, false},
		{ttyYes, true, true, true, false},
		{ttyYes, true, false, false, true},
		{ttyForce, true, false, true, false},
		{ttyNo, false, true, false, false},
		{ttyNo, false, false, false, false},
	} {
		pty, warn := ptyDecision(tc.req, tc.command, tc.term)
		if pty != tc.wantPTY || warn != tc.wantMsg {
			t.Errorf("ptyDecision(%d, command %v, terminal %v) = %v, %v; want %v, %v", tc.req, tc.command, tc.term, pty, warn, tc.wantPTY, tc.wantMsg)
		}
	}
}

// TestSSHClient runs `warren ssh` as a process against a real proxy and
// agent and checks that it behaves as OpenSSH's ssh: it ends on stdin EOF
// and on signals, passes the remote exit status on, and asks for a PTY by
// ssh's rules.
func TestSSHClient(t *testing.T) {
	t.Parallel()
	dir, proxyCfg, agentCfg, userAddr := writeCluster(t)
	start(t, "proxy", "--config", proxyCfg)
	start(t, "agent", "--config", agentCfg)
	cfg := filepath.Join(dir, "ssh_config")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, cfg, "node1", "echo up"); return out == "up\n" })
	base := []string{"ssh", "--proxy", userAddr, "-i", filepath.Join(dir, "alice")}
	sshArgs := func(args ...string) []string { return append(append([]string(nil), base...), args...) }
	// warren runs `warren ssh ARGS` with stdin (nil: /dev/null), for at
	// most a minute.
	warren := func(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, warrenBin, sshArgs(args...)...)
		cmd.Stdin = stdin
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("warren ssh %q did not end within a minute; stderr %q", args, errb.String())
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	}

	// The bug of issue 10: stdin is no terminal, so no PTY is asked for
	// (with ssh's warning), and the remote login shell reads EOF and exits.
	t.Run("no command, stdin /dev/null", func(t *testing.T) {
		_, errs, code := warren(t, nil, "node1")
		if code != 0 || !strings.Contains(errs, ptyWarning) {
			t.Fatalf("got code %d stderr %q, want 0 and ssh's warning", code, errs)
		}
	})
	t.Run("stdin passed on", func(t *testing.T) {
		kernel, err := exec.Command("uname").Output()
		if err != nil {
			t.Fatal(err)
		}
		out, errs, code := warren(t, strings.NewReader("uname\n"), "node1")
		if code != 0 || out != string(kernel) {
			t.Fatalf("echo uname | warren ssh node1: got %q code %d stderr %q, want %q and 0", out, code, errs, kernel)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		if _, errs, code := warren(t, nil, "node1", "exit 7"); code != 7 {
			t.Fatalf("got code %d stderr %q, want 7", code, errs)
		}
	})
	// A remote death by signal exits 255, as OpenSSH's ssh does.
	t.Run("remote killed by a signal", func(t *testing.T) {
		if _, errs, code := warren(t, nil, "node1", "kill -9 $$"); code != 255 {
			t.Fatalf("got code %d stderr %q, want 255", code, errs)
		}
	})
	t.Run("-t without a terminal", func(t *testing.T) {
		_, errs, code := warren(t, nil, "-t", "node1", "true")
		if code != 0 || !strings.Contains(errs, ptyWarning) {
			t.Fatalf("got code %d stderr %q, want 0 and ssh's warning", code, errs)
		}
	})
	// -la would be an unknown flag of warren's: it must reach ls.
	t.Run("flags after the resource go to the command", func(t *testing.T) {
		out, errs, code := warren(t, nil, "node1", "ls", "-la", "/")
		if code != 0 || !strings.HasPrefix(out, "total ") || !strings.Contains(out, " ..\n") {
			t.Fatalf("got %q code %d stderr %q, want the long listing of /", out, code, errs)
		}
	})
	t.Run("unknown resource", func(t *testing.T) {
		_, errs, code := warren(t, nil, "nope", "true")
		if code != 255 || !strings.Contains(errs, `unknown resource "nope"`) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Fatalf("got code %d stderr %q, want 255 and the proxy's refusal on one line", code, errs)
		}
	})
	t.Run("-tt forces a PTY", func(t *testing.T) {
		out, errs, code := warren(t, nil, "-tt", "node1", "tty; exit 3")
		if code != 3 || !strings.HasPrefix(out, "/dev/pts/") {
			t.Fatalf("got %q code %d stderr %q, want a /dev/pts name and 3", out, code, errs)
		}
	})
	// `warren ssh node1 yes | head -1`: once the reader is gone the remote
	// job must end (eow@openssh.com, then SIGPIPE there), not run unread.
	t.Run("stdout closed", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(warrenBin, sshArgs("node1", "yes")...)
		cmd.Stdout = w
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		defer cmd.Process.Kill()
		line := make([]byte, 2)
		if _, err := io.ReadFull(r, line); err != nil || string(line) != "y\n" {
			t.Fatalf("read %q, %v; want y", line, err)
		}
		r.Close()
		code := waitExit(t, cmd)
		if code != 255 {
			t.Fatalf("got code %d stderr %q, want 255 (remote yes killed by SIGPIPE)", code, errb.String())
		}
	})
	// A signal ends the client at once, with ssh's 255, and the node
	// ends the job of the closed session.
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run("remote sleep ends on "+sig.String(), func(t *testing.T) {
			secs := fmt.Sprint(100000 + rand.IntN(100000)) // names this test's sleep on this host
			cmd := exec.Command(warrenBin, sshArgs("node1", "sleep", secs)...)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			waitFor(t, "remote sleep running", func() bool { return processRunning("sleep", secs) })
			cmd.Process.Signal(sig)
			sent := time.Now()
			if code := waitExit(t, cmd); code != 255 {
				t.Fatalf("got code %d stderr %q, want 255", code, errb.String())
			}
			t.Logf("ended %s after %s", time.Since(sent).Round(time.Millisecond), sig)
			waitFor(t, "remote sleep gone", func() bool { return !processRunning("sleep", secs) })
		})
	}

	// Under a local terminal: a shell gets a PTY, the terminal is raw while
	// it runs and restored however the session ends.
	t.Run("terminal: shell exit", func(t *testing.T) {
		tm := startInTerminal(t, sshArgs("node1")...)
		// Typed before the remote shell runs, the exit may be lost (a
		// loaded machine showed it): wait for the shell's own output.
		tm.type_(t, "echo rea''dy\r")
		waitFor(t, "remote shell ready", func() bool { return strings.Contains(tm.out.String(), "ready") })
		tm.type_(t, "exit 5\r")
		if code := waitExit(t, tm.cmd); code != 5 {
			t.Fatalf("got code %d, want 5; terminal output %q", code, tm.out.String())
		}
		tm.checkRestored(t)
	})
	t.Run("terminal: SIGTERM", func(t *testing.T) {
		tm := startInTerminal(t, sshArgs("node1")...)
		// The output, not the echo of what was typed, says "ready".
		tm.type_(t, "echo rea''dy\r")
		waitFor(t, "remote shell ready", func() bool { return strings.Contains(tm.out.String(), "ready") })
		tm.cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, tm.cmd); code != 255 {
			t.Fatalf("got code %d, want 255; terminal output %q", code, tm.out.String())
		}
		tm.checkRestored(t)
	})
}

// waitExit waits for cmd to end, at most promptly, and returns its code.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(promptly):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not end within %s", cmd, promptly)
		return -1
	}
}

// processRunning reports whether a process with exactly this command line
// runs on this host (the agent serves this host). A zombie has an empty
// command line, so a killed process counts as gone before it is reaped.
func processRunning(argv ...string) bool {
	want := strings.Join(argv, "\x00") + "\x00"
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && string(b) == want {
			return true
		}
	}
	return false
}

// terminal is `warren ssh` running with a new PTY as its controlling
// terminal and stdio, as in a terminal window.
type terminal struct {
	cmd    *exec.Cmd
	master *os.File
	tty    *os.File // held open to read the terminal's modes
	cooked *term.State
	out    *lockedBuffer
}

func startInTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	if err := pty.Setsize(master, &pty.Winsize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	cooked, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tm := &terminal{cmd: exec.Command(warrenBin, args...), master: master, tty: tty, cooked: cooked, out: newBuf()}
	tm.cmd.Stdin, tm.cmd.Stdout, tm.cmd.Stderr = tty, tty, tty
	tm.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := tm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if tm.cmd.ProcessState == nil {
			tm.cmd.Process.Kill()
			tm.cmd.Wait()
		}
	})
	// The terminal's output must be read or the client blocks writing it;
	// the copy ends when the cleanup closes the master.
	go io.Copy(tm.out, master)
	waitFor(t, "the terminal in raw mode", func() bool {
		now, err := term.GetState(int(tty.Fd()))
		return err == nil && *now != *cooked
	})
	return tm
}

// type_ types s on the terminal's keyboard.
func (tm *terminal) type_(t *testing.T, s string) {
	t.Helper()
	if _, err := tm.master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// checkRestored fails unless the terminal's modes are back as they were
// before `warren ssh` started.
func (tm *terminal) checkRestored(t *testing.T) {
	t.Helper()
	now, err := term.GetState(int(tm.tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if *now != *tm.cooked {
		t.Fatalf("the terminal was left in raw mode; output %q", tm.out.String())
	}
}
