package nodessh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/echo"
)

// denyMarker is a certificate extension the forwarding tests' hook refuses,
// as the cluster's roles would.
const denyMarker = "deny-forwarding@test.warren"

// forwardHook is a Config.AllowForwarding that records what it was asked
// and refuses certificates carrying denyMarker.
type forwardHook struct {
	mu    sync.Mutex
	kinds []string
}

func (f *forwardHook) allow(conn net.Conn, login string, cert *ssh.Certificate, kind string) error {
	f.mu.Lock()
	f.kinds = append(f.kinds, kind)
	f.mu.Unlock()
	if conn == nil || login == "" || cert == nil {
		return errors.New("hook called without conn, login or certificate")
	}
	if _, ok := cert.Extensions[denyMarker]; ok {
		return fmt.Errorf("role dev does not allow %s forwarding", kind)
	}
	return nil
}

func (f *forwardHook) asked(kind string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.kinds, kind)
}

// forwardHarness is a harness whose AllowForwarding is hook, with keys
// whose certificates permit port and agent forwarding (key), lack both
// (bare), or carry denyMarker (denied).
type forwardHarness struct {
	*harness
	hook         *forwardHook
	key, bare    string
	denied       string
	echoAddr     string // a TCP echo server that upper-cases, on the "node"
	echoPort     string
	permitAll    map[string]string
	permitDenied map[string]string
}

func newForwardHarness(t *testing.T) *forwardHarness {
	t.Helper()
	hook := &forwardHook{}
	h := newHarness(t, withConfig(func(c *Config) { c.AllowForwarding = hook.allow }))
	fh := &forwardHarness{harness: h, hook: hook}
	fh.permitAll = map[string]string{permitPortForwardingExtension: "", permitAgentForwardingExtension: ""}
	fh.permitDenied = map[string]string{permitPortForwardingExtension: "", permitAgentForwardingExtension: "", denyMarker: ""}
	fh.key = h.writeKey("fwd", &certSpec{extensions: fh.permitAll})
	fh.denied = h.writeKey("fwd-denied", &certSpec{extensions: fh.permitDenied})
	fh.bare = h.key // the harness's own: permit-pty only
	fh.echoAddr = startEcho(t)
	_, fh.echoPort, _ = net.SplitHostPort(fh.echoAddr)
	return fh
}

// startEcho serves TCP echo, upper-cased so that a reply shows it went
// through the echo server, on loopback until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		echo.Serve(ln, func(b []byte) { copy(b, bytes.ToUpper(b)) })
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// clientProc is a client process that runs while the test talks to it.
// Its output is collected in logBuffers, so tests wait for a line rather
// than for time; an exit wakes the waiters too. It is killed by PID, if
// still running, when the test ends.
type clientProc struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *logBuffer
	exited         chan struct{}
	code           int
}

func (h *harness) startClient(env []string, name string, args ...string) *clientProc {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = h.clientEnv(env...)
	cmd.Dir = h.dir
	cmd.WaitDelay = 5 * time.Second
	p := &clientProc{cmd: cmd, stdout: newLogBuffer(), stderr: newLogBuffer(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		h.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		h.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer cancel()
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		default:
			p.code = -1
		}
		close(p.exited)
		// Wake whoever waits for output that will never come.
		_, _ = p.stdout.Write(nil)
		_, _ = p.stderr.Write(nil)
	}()
	h.t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *clientProc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitOutput waits until stdout contains want, or fails the test if the
// process exits first.
func (p *clientProc) waitOutput(t *testing.T, want string) {
	t.Helper()
	p.stdout.waitFor(t, fmt.Sprintf("%q on stdout", want), func(out string) bool {
		return strings.Contains(out, want) || p.hasExited()
	})
	if !strings.Contains(p.stdout.String(), want) {
		t.Fatalf("client exited (code %d) before printing %q; stderr: %s", p.code, want, p.stderr.String())
	}
}

// finish closes stdin and waits for the process to exit.
func (p *clientProc) finish(t *testing.T) int {
	t.Helper()
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(cmdTimeout):
		t.Fatalf("client did not exit after its stdin closed; stderr: %s", p.stderr.String())
	}
	return p.code
}

// echoThrough writes line to conn and returns the line that comes back.
func echoThrough(t *testing.T, conn net.Conn, line string) string {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read through the forwarding: %v (got %q)", err, got)
	}
	return strings.TrimSuffix(got, "\n")
}

// TestOpenSSHLocalForwarding forwards with ssh -W, -L and -D to a service
// on the node, as `ssh -L 5432:localhost:5432 node1` would, and checks
// that the server asked the hook about each.
func TestOpenSSHLocalForwarding(t *testing.T) {
	fh := newForwardHarness(t)

	t.Run("ssh -W", func(t *testing.T) {
		// stdin's EOF travels as the channel's EOF, then as the socket's
		// FIN; the echo server's close comes back as the client's EOF.
		res := fh.run(strings.NewReader("hello\nworld\n"), "ssh", fh.sshArgs(fh.key, fh.login, []string{"-W", fh.echoAddr})...)
		if res.code != 0 || res.stdout != "HELLO\nWORLD\n" {
			t.Errorf("ssh -W: exit %d stdout %q stderr %q, want 0 and the echo", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("ssh -L", func(t *testing.T) {
		sock := filepath.Join(fh.dir, "l.sock")
		// The client binds its listeners before it opens the session, so
		// "ready" means the listener is there.
		p := fh.startClient(nil, "ssh", fh.sshArgs(fh.key, fh.login,
			[]string{"-o", "ExitOnForwardFailure=yes", "-L", sock + ":localhost:" + fh.echoPort}, "echo ready; exec cat")...)
		p.waitOutput(t, "ready")
		for i := range 3 {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("PING %d", i)
			if got := echoThrough(t, conn, fmt.Sprintf("ping %d", i)); got != want {
				t.Errorf("through ssh -L: %q, want %q", got, want)
			}
			conn.Close()
		}
		if code := p.finish(t); code != 0 {
			t.Errorf("ssh -L exited %d: %s", code, p.stderr.String())
		}
	})

	t.Run("ssh -D", func(t *testing.T) {
		// -D takes only a TCP port: pick a free one. Should another
		// process take it first, ExitOnForwardFailure makes that a clear
		// failure rather than a hang.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		socksAddr := ln.Addr().String()
		ln.Close()
		p := fh.startClient(nil, "ssh", fh.sshArgs(fh.key, fh.login,
			[]string{"-o", "ExitOnForwardFailure=yes", "-D", socksAddr}, "echo ready; exec cat")...)
		p.waitOutput(t, "ready")
		conn := socks5Connect(t, socksAddr, "127.0.0.1", fh.echoPort)
		if got := echoThrough(t, conn, "through socks"); got != "THROUGH SOCKS" {
			t.Errorf("through ssh -D: %q, want %q", got, "THROUGH SOCKS")
		}
		conn.Close()
		if code := p.finish(t); code != 0 {
			t.Errorf("ssh -D exited %d: %s", code, p.stderr.String())
		}
	})

	t.Run("connect failure reaches the user", func(t *testing.T) {
		closed := freePort(t)
		res := fh.run(nil, "ssh", infoLevel(fh.sshArgs(fh.key, fh.login, []string{"-W", "127.0.0.1:" + closed}))...)
		if res.code == 0 || !strings.Contains(res.stderr, "connect failed: connect to 127.0.0.1:"+closed+" failed: connection refused") {
			t.Errorf("ssh -W to a closed port: exit %d stderr %q, want the refused connect", res.code, res.stderr)
		}
	})

	if !fh.hook.asked(ForwardLocal) {
		t.Errorf("AllowForwarding was never asked about %q", ForwardLocal)
	}
}

// freePort is a loopback TCP port nobody listens on (for a while).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// socks5Connect asks the SOCKS5 server at proxy (RFC 1928, no
// authentication) for a connection to host:port.
func socks5Connect(t *testing.T, proxy, host, port string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Version 5, one method: no authentication.
	if _, err := conn.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var method [2]byte
	if _, err := io.ReadFull(conn, method[:]); err != nil || method != [2]byte{5, 0} {
		t.Fatalf("SOCKS method reply %v, %v; want [5 0]", method, err)
	}
	p, _ := strconv.Atoi(port)
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...) // CONNECT to a domain name
	req = binary.BigEndian.AppendUint16(req, uint16(p))
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var reply [10]byte // version, status, reserved, IPv4, address, port
	if _, err := io.ReadFull(conn, reply[:]); err != nil || reply[1] != 0 {
		t.Fatalf("SOCKS connect reply %v, %v; want status 0", reply, err)
	}
	return conn
}

// allocatedPort matches what OpenSSH's client logs (at INFO) when the
// server chose the port of a remote forwarding.
var allocatedPort = regexp.MustCompile(`Allocated port (\d+) for remote forward`)

// replaceOption is args with option (as the harness's clientOpts give it)
// replaced: ssh takes the first value of an option, so adding one would
// not do.
func replaceOption(args []string, option, with string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == option {
			out[i] = with
		}
	}
	return out
}

// infoLevel is args with OpenSSH's default LogLevel, INFO, in place of the
// harness's ERROR: what a user sees.
func infoLevel(args []string) []string {
	return replaceOption(args, "LogLevel=ERROR", "LogLevel=INFO")
}

// TestOpenSSHRemoteForwarding runs ssh -R with port 0: the server listens
// on the node's loopback, tells the client the port, and carries each
// connection back to an echo server on the client's side.
func TestOpenSSHRemoteForwarding(t *testing.T) {
	fh := newForwardHarness(t)
	for _, tc := range []struct{ name, bind string }{
		{"default address", ""},
		// GatewayPorts=no: a wildcard still listens on loopback only.
		{"wildcard address", "0.0.0.0:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fh.startClient(nil, "ssh", infoLevel(fh.sshArgs(fh.key, fh.login,
				[]string{"-o", "ExitOnForwardFailure=yes", "-R", tc.bind + "0:" + fh.echoAddr}, "exec cat"))...)
			var port string
			p.stderr.waitFor(t, "the allocated port", func(s string) bool {
				if m := allocatedPort.FindStringSubmatch(s); m != nil {
					port = m[1]
				}
				return port != "" || p.hasExited()
			})
			if port == "" {
				t.Fatalf("no allocated port; ssh exited %d: %s", p.code, p.stderr.String())
			}
			listen := "listen=127.0.0.1:" + port
			fh.logs.waitFor(t, "the listener on loopback", func(log string) bool {
				return hasLogLine(log, `msg="port forwarding opened"`, "kind=remote", listen)
			})
			for i := range 2 {
				conn, err := net.Dial("tcp", "127.0.0.1:"+port)
				if err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("BACK %d", i)
				if got := echoThrough(t, conn, fmt.Sprintf("back %d", i)); got != want {
					t.Errorf("through ssh -R: %q, want %q", got, want)
				}
				conn.Close()
			}
			if code := p.finish(t); code != 0 {
				t.Errorf("ssh -R exited %d: %s", code, p.stderr.String())
			}
			// The connection's end closes the listener.
			fh.logs.waitFor(t, "the listener closed", func(log string) bool {
				return hasLogLine(log, `msg="port forwarding closed"`, "kind=remote", listen)
			})
			if conn, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
				conn.Close()
				t.Errorf("port %s still accepts after the client left", port)
			}
		})
	}
	if !fh.hook.asked(ForwardRemote) {
		t.Errorf("AllowForwarding was never asked about %q", ForwardRemote)
	}
}

// TestOpenSSHForwardingRefused checks refusals: a certificate without
// permit-port-forwarding, and the hook (the cluster's roles). A refused
// channel carries the reason to the user; a refused ssh -R is reported by
// the client itself and logged with the reason.
func TestOpenSSHForwardingRefused(t *testing.T) {
	fh := newForwardHarness(t)

	t.Run("certificate lacks permit-port-forwarding", func(t *testing.T) {
		res := fh.run(strings.NewReader("x\n"), "ssh", infoLevel(fh.sshArgs(fh.bare, fh.login, []string{"-W", fh.echoAddr}))...)
		want := "administratively prohibited: port forwarding is not allowed: the certificate lacks the permit-port-forwarding extension"
		if res.code == 0 || !strings.Contains(res.stderr, want) {
			t.Errorf("ssh -W: exit %d stderr %q, want %q", res.code, res.stderr, want)
		}
	})

	t.Run("AllowForwarding refuses ssh -L", func(t *testing.T) {
		sock := filepath.Join(fh.dir, "denied.sock")
		p := fh.startClient(nil, "ssh", infoLevel(fh.sshArgs(fh.denied, fh.login,
			[]string{"-L", sock + ":localhost:" + fh.echoPort}, "echo ready; exec cat"))...)
		p.waitOutput(t, "ready")
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// The client closes the socket once the channel is refused, after
		// printing why.
		if n, err := io.Copy(io.Discard, conn); n != 0 || err != nil {
			t.Errorf("refused forwarding carried %d bytes, %v", n, err)
		}
		conn.Close()
		p.finish(t)
		want := "administratively prohibited: port forwarding is not allowed: role dev does not allow local forwarding"
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("ssh -L stderr %q, want %q", p.stderr.String(), want)
		}
	})

	t.Run("AllowForwarding refuses ssh -R", func(t *testing.T) {
		res := fh.run(nil, "ssh", fh.sshArgs(fh.denied, fh.login,
			[]string{"-o", "ExitOnForwardFailure=yes", "-R", "0:" + fh.echoAddr}, "sleep 60")...)
		if res.code != 255 || !strings.Contains(res.stderr, "remote port forwarding failed") {
			t.Errorf("ssh -R: exit %d stderr %q, want 255 and the client's warning", res.code, res.stderr)
		}
		fh.waitLog(t, "reason=\"port forwarding is not allowed: role dev does not allow remote forwarding\"")
	})
}

// TestOpenSSHAgentForwarding forwards a real ssh-agent: ssh-add -l on the
// node lists its key, through a socket in a directory only the login
// owns, which is gone once the client left.
func TestOpenSSHAgentForwarding(t *testing.T) {
	requireBinaries(t, "ssh-agent", "ssh-add")
	fh := newForwardHarness(t)
	agentSock := filepath.Join(fh.dir, "agent.sock")
	agent := fh.startClient(nil, "ssh-agent", "-D", "-a", agentSock)
	// With -D it prints the socket once it listens, then serves.
	agent.waitOutput(t, "SSH_AUTH_SOCK="+agentSock)
	keyFile := fh.writeKey("agent-key", nil)
	if res := fh.runEnv([]string{"SSH_AUTH_SOCK=" + agentSock}, nil, "ssh-add", keyFile); res.code != 0 {
		t.Fatalf("ssh-add: exit %d: %s", res.code, res.stderr)
	}
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	fingerprint := ssh.FingerprintSHA256(signer.PublicKey())
	// The client forwards the agent it uses (OpenSSH 9.2 does not forward
	// at all without one, even with ForwardAgent=path); IdentitiesOnly
	// keeps it from offering the agent's key for the login.
	agentSSH := func(key, command string) result {
		t.Helper()
		args := fh.sshArgs(key, fh.login, []string{"-A"}, command)
		return fh.run(nil, "ssh", replaceOption(infoLevel(args), "IdentityAgent=none", "IdentityAgent="+agentSock)...)
	}

	t.Run("forwarded", func(t *testing.T) {
		res := agentSSH(fh.key, `ssh-add -l; echo "$SSH_AUTH_SOCK"; stat -c '%U %a' "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"`)
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if res.code != 0 || len(lines) != 4 {
			t.Fatalf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
		}
		if !strings.Contains(lines[0], fingerprint) {
			t.Errorf("ssh-add -l on the node = %q, want the key %s", lines[0], fingerprint)
		}
		if lines[2] != fh.login+" 700" || lines[3] != fh.login+" 600" {
			t.Errorf("socket directory and socket: %q, %q; want %s 700 and %s 600", lines[2], lines[3], fh.login, fh.login)
		}
		dir := filepath.Dir(lines[1])
		fh.logs.waitFor(t, "the agent socket directory removed", func(string) bool {
			_, err := os.Stat(dir)
			return errors.Is(err, os.ErrNotExist)
		})
	})

	t.Run("certificate lacks permit-agent-forwarding", func(t *testing.T) {
		res := agentSSH(fh.bare, `echo "${SSH_AUTH_SOCK-unset}"`)
		if res.stdout != "unset\n" || !strings.Contains(res.stderr, "warren: agent forwarding is not allowed: the certificate lacks the permit-agent-forwarding extension") {
			t.Errorf("stdout %q stderr %q, want unset and the reason", res.stdout, res.stderr)
		}
	})

	t.Run("AllowForwarding refuses", func(t *testing.T) {
		res := agentSSH(fh.denied, `echo "${SSH_AUTH_SOCK-unset}"`)
		if res.stdout != "unset\n" || !strings.Contains(res.stderr, "warren: agent forwarding is not allowed: role dev does not allow agent forwarding") {
			t.Errorf("stdout %q stderr %q, want unset and the reason", res.stdout, res.stderr)
		}
	})

	if !fh.hook.asked(ForwardAgent) {
		t.Errorf("AllowForwarding was never asked about %q", ForwardAgent)
	}
}

// hasLogLine reports whether a line of log has every one of parts, each
// followed by a space or the line's end.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		line += " "
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p+" ") }) {
			return true
		}
	}
	return false
}

// ssh2 runs ssh with key and extra options, with env added to the
// client's environment.
func (h *harness) ssh2(key string, env, extra []string, command ...string) result {
	h.t.Helper()
	return h.runEnv(env, nil, "ssh", h.sshArgs(key, h.login, extra, command...)...)
}

// TestForwardingLimits uses the Go client for what OpenSSH's will not do on
// demand: hold many forwardings, cancel one and forward its port again,
// and close a channel whose target keeps quiet.
func TestForwardingLimits(t *testing.T) {
	fh := newForwardHarness(t)
	c := fh.mustDialGo(&certSpec{extensions: fh.permitAll})

	t.Run("listeners per connection", func(t *testing.T) {
		var lns []net.Listener
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		for range maxListenersPerConn {
			ln, err := c.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("listener %d: %v", len(lns)+1, err)
			}
			lns = append(lns, ln)
		}
		if ln, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
			t.Errorf("listener %d accepted, want refused", maxListenersPerConn+1)
		}
		fh.waitLog(t, fmt.Sprintf("already %d listeners on this connection", maxListenersPerConn))
		// Cancelling frees the slot and the port at once.
		port := lns[0].Addr().(*net.TCPAddr).Port
		if err := lns[0].Close(); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		ln, err := c.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("listen again on the cancelled port: %v", err)
		}
		lns[0] = ln
	})

	t.Run("forwarded connections per connection", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, conn := range conns {
				conn.Close()
			}
		}()
		for range maxForwardedPerConn {
			conn, err := c.Dial("tcp", fh.echoAddr)
			if err != nil {
				t.Fatalf("forwarding %d: %v", len(conns)+1, err)
			}
			conns = append(conns, conn)
		}
		_, err := c.Dial("tcp", fh.echoAddr)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage {
			t.Errorf("forwarding %d: %v, want a resource shortage", maxForwardedPerConn+1, err)
		}
	})

	t.Run("client close ends a quiet target's connection", func(t *testing.T) {
		// A connection of its own: the last subtest's forwardings may
		// still be winding down on the server.
		c := fh.mustDialGo(&certSpec{extensions: fh.permitAll})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		conn, err := c.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		target, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close()
		conn.Close() // the channel's EOF and close
		if err := target.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, target); n != 0 || err != nil {
			t.Errorf("target read %d bytes, %v; want a clean EOF", n, err)
		}
	})
}
