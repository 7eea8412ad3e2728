package nodessh

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
)

// Payloads of the session channel requests (RFC 4254 section 6).
type (
	ptyRequestMsg struct {
		Term    string
		Columns uint32
		Rows    uint32
		Width   uint32
		Height  uint32
		Modes   string
	}
	windowChangeMsg struct {
		Columns uint32
		Rows    uint32
		Width   uint32
		Height  uint32
	}
	envMsg struct {
		Name  string
		Value string
	}
	execMsg struct {
		Command string
	}
	subsystemMsg struct {
		Name string
	}
	signalMsg struct {
		Signal string
	}
	exitStatusMsg struct {
		Status uint32
	}
	exitSignalMsg struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}
)

// ptyRequest is what a pty-req asked for; the PTY itself is opened when
// the job starts.
type ptyRequest struct {
	term  string
	size  pty.Winsize
	modes []byte // encoded terminal modes, applied to the new PTY
}

// session is one "session" channel: requests configure it, then exactly one
// job (exec, shell or subsystem) runs in it.
type session struct {
	c   *connection
	ch  ssh.Channel
	log *slog.Logger
	id  int // the session channel's number on its connection, from 1

	// rec records a PTY job (Config.Record); nil when it is not recorded.
	// Set before the job starts, read by its goroutines.
	rec     Recorder
	recOnce sync.Once // the recording's failure is told and acted on once

	// The request loop owns these; job goroutines never touch them.
	env        []string // accepted client variables, "NAME=value"
	envBytes   int
	envDropped []string // names refused for the limits, for the notice
	pty        *ptyRequest
	job        *job
	eow        bool     // the client sent eow@openssh.com: it reads no more output
	agentSock  string   // SSH_AUTH_SOCK for the job; "" without agent forwarding
	notices    []string // told on stderr when the job starts

	// muteStderr is set on eow: the job's stderr is read and dropped from
	// then on (see onEOW). The request loop sets it, the stderr copier
	// reads it.
	muteStderr atomic.Bool

	wg   sync.WaitGroup // every goroutine of the job
	done chan struct{}  // closed once the exit was reported and the channel closed
}

func (c *connection) serveSession(nc ssh.NewChannel, id int) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		c.log.Debug("accept session channel", "err", err)
		return
	}
	s := &session{
		c:    c,
		ch:   ch,
		id:   id,
		log:  c.log.With("session", id),
		done: make(chan struct{}),
	}
	c.track(ch, true)
	defer c.track(ch, false)
	s.serve(reqs)
}

// serve handles requests until the channel is closed, by us after the job
// ended or by the client (or the connection) at any time. A job still
// running then has lost its client and is killed.
func (s *session) serve(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok, then := s.handle(req)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		// Output must not overtake the reply to exec: clients may not
		// expect data, let alone exit-status, before it.
		if then != nil {
			then()
		}
	}
	if s.job != nil {
		select {
		case <-s.done:
		default:
			s.log.Debug("session channel closed before its job ended; killing the job")
			s.job.abort()
		}
	}
	s.wg.Wait()
	_ = s.ch.Close()
}

// handle answers one request. A non-nil func is run after the reply.
func (s *session) handle(req *ssh.Request) (bool, func()) {
	switch req.Type {
	case "pty-req":
		return s.onPTYReq(req.Payload), nil
	case "window-change":
		return s.onWindowChange(req.Payload), nil
	case "env":
		return s.onEnv(req.Payload), nil
	case "exec":
		var m execMsg
		if err := ssh.Unmarshal(req.Payload, &m); err != nil {
			s.log.Info("malformed exec request", "err", err)
			return false, nil
		}
		return s.start(jobExec, m.Command)
	case "shell":
		return s.start(jobShell, "")
	case "subsystem":
		var m subsystemMsg
		if err := ssh.Unmarshal(req.Payload, &m); err != nil {
			s.log.Info("malformed subsystem request", "err", err)
			return false, nil
		}
		if m.Name != "sftp" {
			s.log.Info("ssh request refused", "type", req.Type, "subsystem", m.Name, "reason", "unknown subsystem")
			return false, nil
		}
		return s.start(jobSFTP, "")
	case "signal":
		return s.onSignal(req.Payload), nil
	case "eow@openssh.com":
		return s.onEOW(), nil
	case "x11-req":
		s.log.Info("ssh request refused", "type", req.Type, "reason", "X11 forwarding is not allowed on this node")
		return false, nil
	case "auth-agent-req@openssh.com":
		return s.onAgentReq(req.WantReply), nil
	default:
		// keepalive@openssh.com lands here too: a failure reply is all
		// the client wants.
		s.log.Debug("ssh request refused", "type", req.Type, "reason", "unsupported")
		return false, nil
	}
}

func (s *session) onPTYReq(payload []byte) bool {
	if s.job != nil {
		return false
	}
	if !s.c.permitPTY {
		s.log.Info("ssh request refused", "type", "pty-req", "reason", "certificate lacks the permit-pty extension")
		return false
	}
	var m ptyRequestMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		s.log.Info("malformed pty-req", "err", err)
		return false
	}
	if strings.IndexByte(m.Term, 0) >= 0 || len(m.Term) > 256 {
		s.log.Info("ssh request refused", "type", "pty-req", "reason", "bad TERM value")
		return false
	}
	s.pty = &ptyRequest{
		term:  m.Term,
		size:  winsize(m.Columns, m.Rows, m.Width, m.Height),
		modes: []byte(m.Modes),
	}
	return true
}

func (s *session) onWindowChange(payload []byte) bool {
	var m windowChangeMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		s.log.Info("malformed window-change", "err", err)
		return false
	}
	if s.pty == nil {
		return false
	}
	s.pty.size = winsize(m.Columns, m.Rows, m.Width, m.Height)
	if s.rec != nil && s.job != nil {
		if err := s.rec.Resize(int(s.pty.size.Cols), int(s.pty.size.Rows)); err != nil {
			s.recordFailed(s.job, err)
		}
	}
	if s.job != nil && s.job.ptmx != nil {
		if err := setWinsize(s.job.ptmx, &s.pty.size); err != nil {
			// The job may just have ended and closed its PTY.
			s.log.Debug("resize pty", "err", err)
			return false
		}
	}
	return true
}

func (s *session) onEnv(payload []byte) bool {
	var m envMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		s.log.Info("malformed env request", "err", err)
		return false
	}
	if s.job != nil {
		return false
	}
	if reason := envProblem(m.Name, m.Value); reason != "" {
		// The value is never logged: clients send secrets this way.
		s.log.Debug("env variable refused", "name", m.Name, "reason", reason)
		return false
	}
	prefix := m.Name + "="
	for i, kv := range s.env {
		if strings.HasPrefix(kv, prefix) {
			s.envBytes -= len(kv)
			s.env = append(s.env[:i], s.env[i+1:]...)
			break
		}
	}
	kv := prefix + m.Value
	var reason string
	switch {
	case len(kv) > maxEnvVarBytes:
		reason = fmt.Sprintf("variable larger than %d bytes", maxEnvVarBytes)
	case len(s.env) >= maxEnvVars:
		reason = fmt.Sprintf("more than %d variables", maxEnvVars)
	case s.envBytes+len(kv) > maxEnvBytes:
		reason = fmt.Sprintf("variables larger than %d bytes in all", maxEnvBytes)
	}
	if reason != "" {
		s.log.Info("env variable refused", "name", m.Name, "bytes", len(kv), "reason", reason)
		if len(s.envDropped) < maxEnvVars {
			s.envDropped = append(s.envDropped, m.Name)
		}
		return false
	}
	s.env = append(s.env, kv)
	s.envBytes += len(kv)
	return true
}

// envNotice is the line that tells the user which variables were not set
// for the limits, or "".
func (s *session) envNotice() string {
	if len(s.envDropped) == 0 {
		return ""
	}
	const shown = 5
	names := strings.Join(s.envDropped[:min(len(s.envDropped), shown)], ", ")
	if len(s.envDropped) > shown {
		names += fmt.Sprintf(" and %d more", len(s.envDropped)-shown)
	}
	what := "environment variables"
	if len(s.envDropped) == 1 {
		what = "environment variable"
	}
	return fmt.Sprintf("%d %s not set (at most %d variables, %d KiB in all, %d KiB each): %s",
		len(s.envDropped), what, maxEnvVars, maxEnvBytes>>10, (maxEnvVarBytes+1)>>10, names)
}

// onAgentReq handles auth-agent-req@openssh.com (ssh -A): the job will
// find the client's agent at SSH_AUTH_SOCK. OpenSSH's client asks without
// wanting a reply, so a refusal is told on the session's stderr too.
func (s *session) onAgentReq(wantReply bool) bool {
	if s.job != nil {
		return false
	}
	refuse := func(reason error) bool {
		s.log.Info("ssh request refused", "type", "auth-agent-req@openssh.com", "reason", reason)
		if !wantReply {
			s.notices = append(s.notices, "agent forwarding is not allowed: "+reason.Error())
		}
		return false
	}
	if err := s.c.mayForward(ForwardAgent); err != nil {
		return refuse(err)
	}
	path, err := s.c.agentSocket()
	if err != nil {
		s.log.Warn("agent forwarding failed", "err", err)
		return refuse(errors.New("the node could not make the agent socket"))
	}
	s.agentSock = path
	return true
}

// tellNotices writes the notices gathered before the job started to the
// session's stderr, where OpenSSH's client shows them.
func (s *session) tellNotices() {
	if n := s.envNotice(); n != "" {
		s.notices = append(s.notices, n)
	}
	eol := "\n"
	if s.pty != nil {
		eol = "\r\n"
	}
	for _, n := range s.notices {
		_, _ = s.ch.Stderr().Write([]byte("warren: " + n + eol))
	}
	s.notices, s.envDropped = nil, nil
}

// signals are the names RFC 4254 section 6.10 defines, without "SIG".
var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT,
	"ALRM": syscall.SIGALRM,
	"FPE":  syscall.SIGFPE,
	"HUP":  syscall.SIGHUP,
	"ILL":  syscall.SIGILL,
	"INT":  syscall.SIGINT,
	"KILL": syscall.SIGKILL,
	"PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV,
	"TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// signalName is the RFC name of sig, or "" if it has none.
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	return ""
}

func (s *session) onSignal(payload []byte) bool {
	var m signalMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		s.log.Info("malformed signal request", "err", err)
		return false
	}
	sig, ok := signals[strings.TrimPrefix(m.Signal, "SIG")]
	if !ok {
		s.log.Debug("ssh request refused", "type", "signal", "signal", m.Signal, "reason", "unknown signal")
		return false
	}
	if s.job == nil {
		return false
	}
	if err := s.job.interrupt(sig); err != nil {
		s.log.Debug("deliver signal", "signal", m.Signal, "err", err)
		return false
	}
	s.log.Debug("signal delivered", "signal", m.Signal)
	return true
}

// onEOW handles eow@openssh.com ("end of write"). OpenSSH's client sends it
// when writing to its own stdout failed (`ssh node yes | head -1` once head
// has exited): it will not read the session's output any more, and drops
// whatever still arrives. Without it the job would run on, unread, until
// the client is killed. As OpenSSH's sshd does (chan_rcvd_eow closes the
// channel's read end), the job's stdout pipe is closed on our side, so its
// next write there gets SIGPIPE (or EPIPE if it ignores that), and the
// exit is then reported as usual.
//
// Two choices differ from sshd, which stops reading stderr but leaves it
// open: stderr is still read, and dropped (the client drops it too), so a
// job that writes more than a pipe's buffer there cannot block for ever,
// and one that writes a last message there still exits as under sshd.
// Under a PTY, where stdout, stderr and the echo are one stream, sshd only
// stops reading the terminal, so the job blocks once the terminal's buffer
// is full and the session never ends; here the terminal is hung up
// instead, as when a terminal window is closed: the job's process group
// gets SIGHUP and its terminal reads and writes fail. In-process SFTP
// ignores eow: its output is the protocol, which sftp clients never stop
// reading.
//
// An eow before the job starts (OpenSSH never sends one: it needs output
// to fail on) is applied when the job starts.
func (s *session) onEOW() bool {
	if s.eow {
		return true
	}
	s.eow = true
	s.muteStderr.Store(true)
	if s.job != nil {
		s.log.Debug("client reads no more output (eow); closing the job's output", "pty", s.job.ptmx != nil)
		s.job.endOfWrite()
	}
	return true
}

// stderrWriter is the channel's stderr stream until the client sent eow,
// and a sink after.
type stderrWriter struct{ s *session }

func (w stderrWriter) Write(p []byte) (int, error) {
	if w.s.muteStderr.Load() {
		return len(p), nil
	}
	return w.s.ch.Stderr().Write(p)
}
