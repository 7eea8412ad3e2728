package nodessh

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The tests in this file use the x/crypto/ssh client for what the OpenSSH
// client cannot do on demand: signals, window changes at a chosen moment,
// refused requests.

// readLine reads one line or fails the test; the session's own timeout
// guards against a server that never writes.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, line)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestSignals(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})

	t.Run("trapped TERM", func(t *testing.T) {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		out, err := sess.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		// The group gets the signal, so the foreground sleep dies at once
		// and the trap runs without waiting for it.
		if err := sess.Start(`trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1; done`); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(out)
		if got := readLine(t, r); got != "ready" {
			t.Fatalf("first line = %q, want ready", got)
		}
		if err := sess.Signal(ssh.SIGTERM); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(r)
		var ee *ssh.ExitError
		if err := sess.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 42 {
			t.Errorf("Wait = %v, want exit status 42", err)
		}
		if !strings.Contains(string(rest), "got-term") {
			t.Errorf("output after signal = %q, want got-term", rest)
		}
	})

	t.Run("KILL reported as exit-signal", func(t *testing.T) {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		out, err := sess.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Start(`echo ready; exec sleep 1000`); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, bufio.NewReader(out)); got != "ready" {
			t.Fatalf("first line = %q, want ready", got)
		}
		if err := sess.Signal(ssh.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var ee *ssh.ExitError
		if err := sess.Wait(); !errors.As(err, &ee) || ee.Signal() != "KILL" {
			t.Errorf("Wait = %v, want killed by KILL", err)
		}
	})
}

// TestSignalForegroundJob checks that under a PTY a signal reaches the job
// an interactive shell runs in the foreground, not the shell, which
// ignores SIGINT.
func TestSignalForegroundJob(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	in, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	// "ready" comes from the foreground job itself, so once it shows, the
	// job holds the terminal. The echo of the typed line has it quoted.
	if _, err := io.WriteString(in, "sh -c 'echo re\"\"ady; exec sleep 1000'\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	waitFor(t, r, "ready")
	if err := sess.Signal(ssh.SIGINT); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, "echo after-$?\nexit 0\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "after-130") // 128 + SIGINT
	if err := sess.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// waitFor reads lines until one contains want.
func waitFor(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	var seen []string
	for {
		line, err := r.ReadString('\n')
		seen = append(seen, line)
		if strings.Contains(line, want) {
			return
		}
		if err != nil {
			t.Fatalf("no %q in output %q: %v", want, seen, err)
		}
	}
}

func TestWindowChange(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	in, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(`stty -echo; stty size; read x; stty size; echo TERM=$TERM`); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if got := readLine(t, r); got != "24 80" {
		t.Fatalf("first size = %q, want %q", got, "24 80")
	}
	if err := sess.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	// Requests are handled in order: once this one is answered, the
	// window-change before it has been applied.
	if ok, err := sess.SendRequest("sync@test.warren", true, nil); ok || err != nil {
		t.Fatalf("sync request = %v, %v; want refused", ok, err)
	}
	if _, err := in.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, r); got != "50 132" {
		t.Errorf("size after window-change = %q, want %q", got, "50 132")
	}
	if got := readLine(t, r); got != "TERM=xterm" {
		t.Errorf("got %q, want TERM=xterm", got)
	}
	if err := sess.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})

	t.Run("local port forwarding", func(t *testing.T) {
		_, err := c.Dial("tcp", "127.0.0.1:1")
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.Contains(oce.Message, "port forwarding is not allowed") {
			t.Errorf("Dial = %v, want prohibited: port forwarding is not allowed", err)
		}
	})
	t.Run("remote port forwarding", func(t *testing.T) {
		if ln, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
			t.Errorf("Listen succeeded, want refused")
		}
	})
	t.Run("unknown channel type", func(t *testing.T) {
		_, _, err := c.OpenChannel("bogus@test.warren", nil)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.UnknownChannelType {
			t.Errorf("OpenChannel = %v, want unknown channel type", err)
		}
	})
	t.Run("session requests", func(t *testing.T) {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		for _, typ := range []string{"auth-agent-req@openssh.com", "x11-req", "bogus@test.warren"} {
			if ok, err := sess.SendRequest(typ, true, nil); ok || err != nil {
				t.Errorf("%s = %v, %v; want refused", typ, ok, err)
			}
		}
		if err := sess.RequestSubsystem("not-sftp"); err == nil {
			t.Errorf("unknown subsystem accepted")
		}
		if err := sess.Setenv("LD_PRELOAD", "/x.so"); err == nil {
			t.Errorf("LD_PRELOAD accepted")
		}
		if err := sess.Setenv("BAD=NAME", "x"); err == nil {
			t.Errorf("name with '=' accepted")
		}
		if err := sess.Setenv("GOOD_NAME", "x"); err != nil {
			t.Errorf("GOOD_NAME refused: %v", err)
		}
	})
	t.Run("pty without permit-pty", func(t *testing.T) {
		c := h.mustDialGo(&certSpec{noPTY: true})
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if err := sess.RequestPty("xterm", 24, 80, nil); err == nil {
			t.Errorf("pty-req accepted without permit-pty")
		}
	})
}

func TestForceCommand(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{critical: map[string]string{forceCommandOption: `echo "forced:$SSH_ORIGINAL_COMMAND"`}})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output("rm -rf /nothing")
	if err != nil || string(out) != "forced:rm -rf /nothing\n" {
		t.Errorf("Output = %q, %v; want the forced command", out, err)
	}
}

// TestCloseKillsJobs checks that Close ends live sessions, kills their
// process groups and returns only when the server is idle.
func TestCloseKillsJobs(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(`sleep 1000 & echo $$ $!; wait`); err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(readLine(t, bufio.NewReader(out)))
	if len(fields) != 2 {
		t.Fatalf("pids = %q, want two", fields)
	}
	shell, _ := strconv.Atoi(fields[0])
	background, _ := strconv.Atoi(fields[1])

	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	// The shell was reaped by the server before Close returned.
	if err := syscall.Kill(shell, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("shell %d still exists after Close (kill 0: %v)", shell, err)
	}
	// The background sleep shared its group; it dies asynchronously and is
	// reaped by init, so wait for it.
	waitGone(t, background)
	if err := sess.Wait(); err == nil {
		t.Errorf("session Wait succeeded after Close, want an error")
	}
}

// waitGone waits until pid has died (it may linger as a zombie of init).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The state follows the ")" that closes the command name.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d still alive: %s", pid, b)
			return
		}
		<-tick.C
	}
}

// socketPair is a connected pair of Unix sockets: a buffered, non-TCP
// net.Conn like the tunnel adapter (net.Pipe is unbuffered, and both SSH
// sides write their version line before reading).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// TestServeConnPipe serves a conn that is not TCP, as the tunnel adapter
// is not, and checks that ending ctx ends ServeConn.
func TestServeConnPipe(t *testing.T) {
	h := newHarness(t)
	srvSide, cliSide := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- h.srv.ServeConn(ctx, srvSide) }()

	conn, chans, reqs, err := ssh.NewClientConn(cliSide, "node1:22", h.clientConfig(h.login, h.signer(&certSpec{})))
	if err != nil {
		t.Fatal(err)
	}
	client := ssh.NewClient(conn, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(`echo "hi ${SSH_CONNECTION-unset}"`)
	if err != nil || string(out) != "hi unset\n" {
		t.Errorf("Output = %q, %v; want %q", out, err, "hi unset\n")
	}
	cancel()
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Errorf("ServeConn = %v, want context.Canceled", err)
	}
	if err := client.Wait(); err == nil {
		t.Errorf("client connection still up after ServeConn returned")
	}
}

// TestGarbage feeds non-SSH bytes to the server: it must log, drop the
// connection and keep serving.
func TestGarbage(t *testing.T) {
	h := newHarness(t)
	random := make([]byte, 4096)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	payloads := map[string][]byte{
		"random bytes":     random,
		"http":             []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"garbage after id": append([]byte("SSH-2.0-OpenSSH_9.2\r\n"), random...),
	}
	for name, p := range payloads {
		conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", h.port))
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(p) // the server may hang up before all is written
		// An HTTP request is a valid pre-banner line: only our EOF ends it.
		_ = conn.(*net.TCPConn).CloseWrite()
		// Wait for the server to hang up; it logs before it does.
		_, err = io.Copy(io.Discard, conn)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: server kept the connection open", name)
		}
		conn.Close()
	}
	h.logs.waitFor(t, fmt.Sprintf("%d handshake failures", len(payloads)), func(log string) bool {
		return strings.Count(log, "ssh handshake failed") == len(payloads)
	})
	if got := h.mustSSH("echo alive"); got != "alive\n" {
		t.Errorf("after garbage: stdout %q", got)
	}
}

// TestHandshakeTimeout checks that a client that never speaks is dropped.
func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, withServer(func(s *Server) { s.handshakeTimeout = 100 * time.Millisecond }))
	srvSide, cliSide := net.Pipe()
	defer cliSide.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.srv.ServeConn(ctx, srvSide); !errors.Is(err, errHandshakeTimeout) {
		t.Errorf("ServeConn = %v, want %v", err, errHandshakeTimeout)
	}
}

func TestBanner(t *testing.T) {
	const banner = "Authorized use only.\n"
	h := newHarness(t, withConfig(func(c *Config) { c.Banner = banner }))
	cfg := h.clientConfig(h.login, h.signer(&certSpec{}))
	got := make(chan string, 1)
	cfg.BannerCallback = func(msg string) error {
		got <- msg
		return nil
	}
	c, err := ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", h.port), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case msg := <-got:
		if msg != banner {
			t.Errorf("banner = %q, want %q", msg, banner)
		}
	default:
		t.Errorf("no banner received")
	}
}

func TestTerminalModes(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	modes := ssh.TerminalModes{ssh.ECHO: 0, ssh.VERASE: 8, ssh.IUTF8: 1}
	if err := sess.RequestPty("xterm", 24, 80, modes); err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("stty -a")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(strings.ReplaceAll(string(out), ";", " "))
	has := func(f string) bool { return slices.Contains(fields, f) }
	if !has("-echo") || !has("iutf8") || !strings.Contains(string(out), "erase = ^H") {
		t.Errorf("stty -a = %q, want -echo, iutf8 and erase = ^H", out)
	}
}

// TestChannelCloseKillsJob checks that a job whose client closes the
// channel is ended: by SIGHUP, or by SIGKILL if it ignores that.
func TestChannelCloseKillsJob(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	for _, tc := range []struct{ name, command string }{
		{"hangup", `echo $$; exec sleep 1000`},
		{"ignores hangup", `trap '' HUP; echo $$; exec sleep 1000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			out, err := sess.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := sess.Start(tc.command); err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(readLine(t, bufio.NewReader(out)))
			if err != nil {
				t.Fatal(err)
			}
			sess.Close()
			waitGone(t, pid)
		})
	}
}

// TestPTYHeldOpen checks that a PTY session ends when its leader exits,
// even if a background process that ignores the hangup keeps the terminal
// open.
func TestPTYHeldOpen(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(`trap '' HUP; sleep 1000 & echo $!`)
	if err != nil {
		t.Fatalf("Output = %q, %v; want the session to end", out, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	// The straggler outlives the session by design (its group leader is
	// gone, so the server no longer signals it); do not leave it behind.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill background sleep %d: %v", pid, err)
	}
}
