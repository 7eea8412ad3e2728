package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// `warren ssh` behaves like OpenSSH's ssh where the two overlap: the same
// PTY rules (-t, -tt, -T), the remote exit status as its own, 255 for its
// own failures, and an end on SIGINT, SIGTERM and SIGHUP.

// connectTimeout bounds reaching the resource: the TCP dial, both SSH
// handshakes and the proxy's answer to the channel open. A peer that
// accepts and then says nothing must not hang the client for ever.
const connectTimeout = 30 * time.Second

// ptyWarning is OpenSSH's own wording, so that scripts and people that know
// ssh recognise it.
const ptyWarning = "Pseudo-terminal will not be allocated because stdin is not a terminal."

// ttyRequest is OpenSSH's RequestTTY: what -t, -tt and -T asked for.
type ttyRequest int

const (
	ttyAuto  ttyRequest = iota // no flag: a PTY for a shell, none for a command
	ttyNo                      // -T
	ttyYes                     // -t: a PTY even for a command, if stdin is a terminal
	ttyForce                   // -tt (or -t -t): a PTY even when stdin is not a terminal
)

// ttyFlag is one of -t, -tt and -T. The three share one ttyRequest so
// that, as in ssh, the last of -t and -T wins and a second -t forces.
type ttyFlag struct {
	req  *ttyRequest
	kind ttyRequest
}

func (f ttyFlag) IsBoolFlag() bool { return true }

// String is empty so that --help shows no default (flag calls it on a zero
// ttyFlag, whose req is nil).
func (f ttyFlag) String() string { return "" }

func (f ttyFlag) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if err != nil || !on {
		return err
	}
	if f.kind == ttyYes && (*f.req == ttyYes || *f.req == ttyForce) {
		*f.req = ttyForce
	} else {
		*f.req = f.kind
	}
	return nil
}

// ptyDecision applies ssh's rules: whether to ask for a PTY, and whether to
// say that one was wanted but stdin is not a terminal. Without a terminal
// a remote PTY would never see the end of stdin (a PTY has no EOF to pass
// on), so `echo uname | warren ssh node1` would never return.
func ptyDecision(req ttyRequest, hasCommand, stdinIsTerminal bool) (pty, warn bool) {
	switch {
	case req == ttyNo, req == ttyAuto && hasCommand:
		return false, false
	case req == ttyForce:
		return true, false
	case !stdinIsTerminal:
		return false, true
	}
	return true, false
}

func runSSH(ctx context.Context, args []string) error {
	fs := newFlags("ssh", "[-t | -tt | -T] [--proxy HOST:PORT] [-i KEY] [login@]resource [command...]")
	cf := addClientFlags(fs)
	var tty ttyRequest
	fs.Var(ttyFlag{&tty, ttyYes}, "t", "ask for a pseudo-terminal even with a command (when stdin is a terminal); given twice, as -tt")
	fs.Var(ttyFlag{&tty, ttyForce}, "tt", "ask for a pseudo-terminal even when stdin is not a terminal")
	fs.Var(ttyFlag{&tty, ttyNo}, "T", "no pseudo-terminal")
	// Flags end at the resource: what follows is the remote command
	// (`warren ssh node1 ls -la`).
	if err := parseUntilCommand(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"missing resource"}
	}
	login, resource, found := strings.Cut(fs.Arg(0), "@")
	if !found {
		login, resource = "", login
	}
	if resource == "" {
		return usageError{fmt.Sprintf("%q names no resource", fs.Arg(0))}
	}
	// As ssh, the words are joined with spaces and the remote shell splits
	// them again.
	command := strings.Join(fs.Args()[1:], " ")
	withPTY, warn := ptyDecision(tty, command != "", term.IsTerminal(int(os.Stdin.Fd())))
	if warn {
		fmt.Fprintln(os.Stderr, ptyWarning)
	}

	// main cancels ctx on SIGINT and SIGTERM; a hangup (the terminal went
	// away) ends the session too rather than killing the process with the
	// terminal still raw.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	// With SIGPIPE caught, a write to a closed stdout fails with EPIPE
	// instead of killing the process, so outputWriter can tell the server
	// and the terminal is restored.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)

	rc, err := dialResource(ctx, cf, login, resource)
	if err != nil {
		return sshFailure(ctx, err)
	}
	defer rc.close()
	err = rc.session(ctx, command, withPTY)
	var exit *ssh.ExitError
	switch {
	case ctx.Err() != nil:
		// Killed by a signal: ssh exits 255 and says nothing.
		return exitError(255)
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.Signal() != "":
		// A remote death by signal: OpenSSH's ssh exits 255 (x/crypto
		// would say 128+N, as a shell does), and so do we.
		return exitError(255)
	case errors.As(err, &exit):
		return exitError(exit.ExitStatus())
	case errors.As(err, new(*ssh.ExitMissingError)):
		return sshFailure(ctx, fmt.Errorf("%s closed the session without an exit status", resource))
	}
	return sshFailure(ctx, err)
}

// sshFailure turns a failure of the client itself (connection, login,
// session) into ssh's exit status 255 with one line on stderr. Mistakes in
// the command line stay usage errors; a signal's end is silent, as in ssh.
func sshFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return exitError(255)
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	fmt.Fprintf(os.Stderr, "warren ssh: %v\n", err)
	return exitError(255)
}

// resourceConn is an SSH connection to a resource through the proxy.
type resourceConn struct {
	tcp   net.Conn // to the proxy; closing it ends everything above it
	proxy *ssh.Client
	node  *ssh.Client
	// stopClose detaches the close-on-signal hook.
	stopClose func() bool
}

// dialResource connects to the proxy and, through it, logs in to the
// resource. Neither handshake takes a context, so a signal (ctx) or the
// connect timeout closes the TCP connection under them.
func dialResource(ctx context.Context, cf *clientFlags, login, resource string) (*resourceConn, error) {
	cr, err := cf.load()
	if err != nil {
		return nil, err
	}
	if login == "" && len(cr.cert.ValidPrincipals) > 0 {
		login = cr.cert.ValidPrincipals[0]
	}
	dialCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var d net.Dialer
	tcp, err := d.DialContext(dialCtx, "tcp", cf.proxy)
	if err != nil {
		return nil, fmt.Errorf("connect to proxy %s: %w", cf.proxy, err)
	}
	stopDialClose := context.AfterFunc(dialCtx, func() { tcp.Close() })
	timedOut := func(err error) error {
		if dialCtx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: no answer within %s", resource, connectTimeout)
		}
		return err
	}
	fail := func(err error) (*resourceConn, error) {
		tcp.Close()
		return nil, timedOut(err)
	}
	pc, pchans, preqs, err := ssh.NewClientConn(tcp, cf.proxy, &ssh.ClientConfig{
		User:            cr.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cr.signer)},
		HostKeyCallback: cr.hosts,
		BannerCallback:  func(msg string) error { fmt.Fprint(os.Stderr, msg); return nil },
	})
	if err != nil {
		return fail(fmt.Errorf("log in to proxy %s as %s: %w", cf.proxy, cr.user, err))
	}
	proxyClient := ssh.NewClient(pc, pchans, preqs)
	// The same path as OpenSSH's -J: a direct-tcpip channel through the
	// proxy, and an end-to-end SSH connection inside it.
	addr := net.JoinHostPort(resource, "22")
	nc, err := proxyClient.Dial("tcp", addr)
	if err != nil {
		var refused *ssh.OpenChannelError
		if errors.As(err, &refused) {
			// The proxy's reason is the whole story ("unknown
			// resource …", "access denied: …", "… is offline").
			return fail(fmt.Errorf("reach %s: %s", resource, strings.TrimPrefix(refused.Message, "warren: ")))
		}
		return fail(fmt.Errorf("reach %s: %w", resource, err))
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:            login,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cr.signer)},
		HostKeyCallback: cr.resourceHosts,
	})
	if err != nil {
		return fail(fmt.Errorf("log in to %s as %s: %w", resource, login, err))
	}
	if !stopDialClose() {
		// The timeout or a signal fired as the login completed.
		tcp.Close()
		return nil, timedOut(errors.New("interrupted"))
	}
	rc := &resourceConn{tcp: tcp, proxy: proxyClient, node: ssh.NewClient(conn, chans, reqs)}
	// From here on only a signal ends the connection from our side.
	rc.stopClose = context.AfterFunc(ctx, func() { tcp.Close() })
	return rc, nil
}

func (rc *resourceConn) close() {
	rc.stopClose()
	rc.node.Close()
	rc.proxy.Close()
	rc.tcp.Close()
}

// session runs command, or a shell if it is empty, with this process's
// stdio, and returns how it ended. It returns at once when ctx ends; the
// connection is closed then (dialResource), and the node ends the job of a
// session whose client is gone.
func (rc *resourceConn) session(ctx context.Context, command string, withPTY bool) error {
	sess, err := rc.node.NewSession()
	if err != nil {
		return fmt.Errorf("open a session: %w", err)
	}
	defer sess.Close()
	// x/crypto/ssh closes the channel's write side when stdin ends, which
	// is how `echo uname | warren ssh node1` ends: the remote shell reads
	// EOF.
	sess.Stdin = os.Stdin
	sess.Stdout = &outputWriter{w: os.Stdout, sess: sess, eow: true}
	sess.Stderr = &outputWriter{w: os.Stderr}
	if withPTY {
		restore, err := requestPTY(sess)
		if err != nil {
			return err
		}
		// Every return from here on, a signal's included, restores the
		// terminal before the process exits.
		defer restore()
	}
	if command == "" {
		err = sess.Shell()
	} else {
		err = sess.Start(command)
	}
	if err != nil {
		return fmt.Errorf("start the session: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err := <-waited:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// requestPTY asks for a PTY the size of the local terminal and, if stdin is
// one, puts it in raw mode (keys such as ^C and ^Z are bytes for the remote
// side, as in ssh) and passes window size changes on. restore undoes both.
// A refused PTY is not fatal, as in ssh: the session goes on without one.
func requestPTY(sess *ssh.Session) (restore func(), err error) {
	fd := int(os.Stdin.Fd())
	isTerm := term.IsTerminal(fd)
	w, h := 80, 24
	if isTerm {
		if cw, ch, err := term.GetSize(fd); err == nil {
			w, h = cw, ch
		}
	}
	if err := sess.RequestPty(envOr("TERM", "xterm-256color"), h, w, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		fmt.Fprintln(os.Stderr, "warren ssh: PTY allocation request failed; going on without a terminal")
		return func() {}, nil
	}
	if !isTerm {
		return func() {}, nil // -tt without a local terminal: nothing to set up
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-winch:
				if cw, ch, err := term.GetSize(fd); err == nil {
					_ = sess.WindowChange(ch, cw)
				}
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(done)
		_ = term.Restore(fd, old)
	}, nil
}

// outputWriter copies the session's output to a local file until a write
// fails (`warren ssh node1 yes | head -1` once head has exited), and drops
// it from then on: x/crypto/ssh stops reading a stream whose writer fails,
// and the remote job would then block on a full window for ever. For
// stdout (eow) it also sends eow@openssh.com, as ssh does, so the node
// closes the job's output and the job ends by SIGPIPE as it would locally.
// Only the session's one copier goroutine per stream calls Write.
type outputWriter struct {
	w      io.Writer
	sess   *ssh.Session
	eow    bool
	failed bool
}

func (o *outputWriter) Write(p []byte) (int, error) {
	if o.failed {
		return len(p), nil
	}
	if _, err := o.w.Write(p); err != nil {
		o.failed = true
		if o.eow {
			_, _ = o.sess.SendRequest("eow@openssh.com", false, nil)
		}
	}
	return len(p), nil
}
