package nodessh

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// ptyDrainTimeout is how long a PTY may stay silent after the session
// leader exited before the session ends anyway (see copyPTYOutput).
const ptyDrainTimeout = 2 * time.Second

// abortGrace is how long a job whose client went away has to exit after
// SIGHUP (the signal for "your terminal is gone") before its process group
// is killed.
const abortGrace = 2 * time.Second

type jobKind int

const (
	jobExec jobKind = iota
	jobShell
	jobSFTP
)

func (k jobKind) String() string {
	switch k {
	case jobExec:
		return "exec"
	case jobShell:
		return "shell"
	case jobSFTP:
		return "sftp"
	}
	return "unknown"
}

// job is what runs in a session: a child process, or (cmd == nil) the
// in-process SFTP server.
type job struct {
	cmd    *exec.Cmd
	ptmx   *os.File // master side of the PTY; nil without one
	stdin  *os.File // parent's ends of the child's pipes; nil with a PTY
	stdout *os.File
	stderr *os.File
	stop   func() // in-process SFTP: ends a long request (copy-data) at once

	reaped chan struct{} // closed when the child has been waited for

	mu     sync.Mutex // guards exited
	exited bool       // the child was reaped: its pid may belong to someone else now
}

func newJob(cmd *exec.Cmd) *job {
	return &job{cmd: cmd, reaped: make(chan struct{})}
}

// signal delivers sig to the child's process group (the child leads it:
// Setpgid or Setsid), so a shell's foreground children get it too. The
// group is only signalled while the child is unreaped: after that its id
// may be reused.
func (j *job) signal(sig syscall.Signal) error {
	if j.cmd == nil {
		return errors.New("in-process job takes no signals")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.exited {
		return errors.New("process has exited")
	}
	if err := syscall.Kill(-j.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("kill process group %d: %w", j.cmd.Process.Pid, err)
	}
	return nil
}

// interrupt delivers a client's signal request. Under a PTY it goes to the
// terminal's foreground group, as a key like ^C would: an interactive
// shell runs each job in a group of its own and ignores SIGINT itself.
func (j *job) interrupt(sig syscall.Signal) error {
	if j.ptmx == nil {
		return j.signal(sig)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.exited {
		return errors.New("process has exited")
	}
	pgrp, err := foregroundGroup(j.ptmx)
	if err != nil || pgrp <= 0 {
		pgrp = j.cmd.Process.Pid
	}
	if err := syscall.Kill(-pgrp, sig); err != nil {
		return fmt.Errorf("kill process group %d: %w", pgrp, err)
	}
	return nil
}

// abort ends a job whose client is gone. The process group gets SIGHUP,
// as when a terminal hangs up, and SIGKILL if the child has not exited
// after abortGrace. The parent's stdio ends are closed so that every
// copier returns even if a process outside the group holds the other end.
func (j *job) abort() {
	if j.stop != nil {
		j.stop()
	}
	if j.cmd != nil {
		_ = j.signal(syscall.SIGHUP)
	}
	for _, f := range []*os.File{j.ptmx, j.stdin, j.stdout, j.stderr} {
		if f != nil {
			f.Close()
		}
	}
	if j.cmd == nil {
		return
	}
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-j.reaped:
	case <-t.C:
		_ = j.signal(syscall.SIGKILL)
	}
}

// endOfWrite closes the job's output after the client sent eow (see
// session.onEOW): the read end of its stdout pipe, so that its next write
// there fails, or, under a PTY, the terminal, which hangs it up. The
// copiers then end on their own (a closed file reads os.ErrClosed).
func (j *job) endOfWrite() {
	switch {
	case j.cmd == nil:
		// In-process SFTP: its output is the protocol.
	case j.ptmx != nil:
		// The kernel sends SIGHUP to the session leader when the master
		// closes; the group gets it too, as abort does, so a job the
		// leader runs in the foreground hears it as well.
		_ = j.signal(syscall.SIGHUP)
		j.ptmx.Close()
	default:
		j.stdout.Close()
	}
}

// wait reaps the child and returns how it ended (nil if it could not be
// waited for).
func (j *job) wait() *os.ProcessState {
	_ = j.cmd.Wait() // a non-zero exit is an error here; the state says it all
	j.mu.Lock()
	j.exited = true
	j.mu.Unlock()
	close(j.reaped)
	return j.cmd.ProcessState
}

func (j *job) isReaped() bool {
	select {
	case <-j.reaped:
		return true
	default:
		return false
	}
}

// start begins the session's job. On success the returned func, run after
// the reply, starts copying and waiting.
func (s *session) start(kind jobKind, command string) (bool, func()) {
	if s.job != nil {
		s.log.Info("ssh request refused", "type", kind.String(), "reason", "the session already runs a job")
		return false, nil
	}
	srv, acct := s.c.srv, s.c.acct
	env := append(acct.env(), s.env...)
	if s.c.sshConn != "" {
		env = append(env, "SSH_CONNECTION="+s.c.sshConn, "SSH_CLIENT="+s.c.sshClient)
	}
	if s.agentSock != "" {
		env = append(env, "SSH_AUTH_SOCK="+s.agentSock)
	}
	if forced := s.c.forceCommand; forced != "" {
		// As sshd does: the certificate's command runs whatever was
		// asked for, which it can read from SSH_ORIGINAL_COMMAND.
		original := command
		if kind == jobSFTP {
			original = "internal-sftp"
			if len(srv.cfg.SFTPCommand) > 0 {
				original = strings.Join(srv.cfg.SFTPCommand, " ")
			}
		}
		if original != "" {
			env = append(env, "SSH_ORIGINAL_COMMAND="+original)
		}
		kind, command = jobExec, forced
	}

	var path string
	var args []string // including argv[0]
	switch kind {
	case jobExec:
		path, args = acct.shell, []string{filepath.Base(acct.shell), "-c", command}
	case jobShell:
		// A leading '-' in argv[0] makes it a login shell.
		path, args = acct.shell, []string{"-" + filepath.Base(acct.shell)}
	case jobSFTP:
		if len(srv.cfg.SFTPCommand) == 0 {
			return s.startInProcessSFTP()
		}
		path, args = srv.cfg.SFTPCommand[0], srv.cfg.SFTPCommand
	}
	withPTY := s.pty != nil && kind != jobSFTP
	if withPTY && s.pty.term != "" {
		env = append(env, "TERM="+s.pty.term)
	}

	cmd := &exec.Cmd{
		Path:        path,
		Args:        args,
		Env:         env,
		Dir:         acct.workDir(),
		SysProcAttr: &syscall.SysProcAttr{Credential: acct.credential(srv.root)},
	}
	var j *job
	var err error
	if withPTY {
		rec, refused := s.startRecording(command)
		if refused != "" {
			// Accepted, then told and ended: OpenSSH drops what the
			// channel says before a failure reply.
			return true, func() {
				_, _ = s.ch.Stderr().Write([]byte("warren: " + refused + "\r\n"))
				s.exitWith(1)
			}
		}
		if j, err = startWithPTY(cmd, s.pty, s.log); err != nil && rec != nil {
			_ = rec.Close()
		}
		s.rec = rec
	} else {
		j, err = startWithPipes(cmd)
	}
	if err != nil {
		s.rec = nil
		s.log.Warn("start session job", "kind", kind.String(), "err", err)
		return false, nil
	}
	s.job = j
	s.log.Debug("session job started", "kind", kind.String(), "command", command, "pty", withPTY, "pid", cmd.Process.Pid)
	return true, func() {
		s.tellNotices()
		s.run(j)
		if s.eow {
			j.endOfWrite()
		}
	}
}

// startWithPipes runs cmd with three pipes in its own process group.
// Plain pipes rather than exec's StdinPipe and friends: their ends are
// ours to close, so Wait never races the copiers.
func startWithPipes(cmd *exec.Cmd) (*job, error) {
	var files []*os.File // every end, closed on failure
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	fail := func(err error) (*job, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	stdinR, stdinW, err := pipe()
	if err != nil {
		return fail(fmt.Errorf("stdin pipe: %w", err))
	}
	stdoutR, stdoutW, err := pipe()
	if err != nil {
		return fail(fmt.Errorf("stdout pipe: %w", err))
	}
	stderrR, stderrW, err := pipe()
	if err != nil {
		return fail(fmt.Errorf("stderr pipe: %w", err))
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", cmd.Path, err))
	}
	// The child has its copies; ours would keep EOF from ever coming.
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()
	j := newJob(cmd)
	j.stdin, j.stdout, j.stderr = stdinW, stdoutR, stderrR
	return j, nil
}

// startWithPTY runs cmd as a session leader whose controlling terminal is
// a new PTY of the given size.
func startWithPTY(cmd *exec.Cmd, req *ptyRequest, log *slog.Logger) (*job, error) {
	master, tty, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer tty.Close() // the child has its own; ours would hide the hangup
	if err := setWinsize(master, &req.size); err != nil {
		master.Close()
		return nil, fmt.Errorf("size pty: %w", err)
	}
	if err := applyModes(tty, req.modes); err != nil {
		// The kernel's defaults still make a usable terminal.
		log.Debug("apply terminal modes", "err", err)
	}
	cmd.Env = append(cmd.Env, "SSH_TTY="+tty.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // the child's fd 0, the tty
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	j := newJob(cmd)
	j.ptmx = master
	return j, nil
}

// run copies the job's stdio over the channel and reports its end.
func (s *session) run(j *job) {
	var outputs sync.WaitGroup // the output copiers, which must finish before the exit is reported
	copyOut := func(copy func() error) {
		s.wg.Add(1)
		outputs.Add(1)
		go func() {
			defer s.wg.Done()
			defer outputs.Done()
			if err := copy(); err != nil && !errors.Is(err, os.ErrClosed) {
				s.log.Debug("copy job output", "err", err)
			}
		}()
	}
	if j.ptmx != nil {
		var in io.Reader = s.ch
		if s.rec != nil {
			in = recordingReader{r: s.ch, s: s, j: j}
		}
		s.copyIn(j.ptmx, in, false)
		copyOut(func() error { return s.copyPTYOutput(j) })
	} else {
		s.copyIn(j.stdin, s.ch, true)
		copyOut(func() error { return copyAndClose(s.ch, j.stdout) })
		copyOut(func() error { return copyAndClose(stderrWriter{s}, j.stderr) })
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		state := j.wait()
		// Pipes are drained however long a background process keeps them
		// open, as OpenSSH does. A PTY ends with its session leader: the
		// reader stops once no output came for ptyDrainTimeout.
		if j.ptmx != nil {
			if err := j.ptmx.SetReadDeadline(time.Now().Add(ptyDrainTimeout)); err != nil {
				j.ptmx.Close() // no deadlines: hang up at once rather than never
			}
		}
		outputs.Wait()
		if j.ptmx != nil {
			j.ptmx.Close()
		}
		if s.rec != nil {
			if err := s.rec.Close(); err != nil {
				s.log.Warn("close session recording", "err", err)
			}
		}
		s.reportExit(state)
		close(s.done)
	}()
}

func copyAndClose(dst io.Writer, src *os.File) error {
	defer src.Close()
	_, err := io.Copy(dst, src)
	return err
}

// copyPTYOutput copies the PTY's output to the channel until every holder
// of the terminal is gone (Linux then reads EIO) or, once the session
// leader has been reaped, no output came for ptyDrainTimeout: a background
// process that ignored the hangup must not keep the session open for ever.
// The deadline is renewed after every write, so a slow client still gets
// everything the job wrote.
func (s *session) copyPTYOutput(j *job) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := j.ptmx.Read(buf)
		if n > 0 {
			if s.rec != nil {
				// Recorded before the client sees it: with a recording
				// that must not fail, nothing unrecorded is shown.
				if rerr := s.rec.Output(buf[:n]); rerr != nil {
					s.recordFailed(j, rerr)
					return nil
				}
			}
			if _, err := s.ch.Write(buf[:n]); err != nil {
				return err
			}
			if j.isReaped() {
				_ = j.ptmx.SetReadDeadline(time.Now().Add(ptyDrainTimeout))
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EIO):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.log.Debug("pty still held open after the session leader exited; hanging up")
			return nil
		default:
			return err
		}
	}
}

// copyIn copies the client's data (src: the channel, or a reader that
// records it on the way) to the job. With closeOnEOF the end of
// the client's data is the end of the job's stdin; a PTY has no such thing
// and stays open.
func (s *session) copyIn(dst *os.File, src io.Reader, closeOnEOF bool) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, err := io.Copy(dst, src)
		if closeOnEOF {
			dst.Close()
		}
		if err != nil {
			// The job stopped reading. Keep consuming so the client is
			// not stalled on a full window while the job finishes.
			_, _ = io.Copy(io.Discard, s.ch)
		}
	}()
}

// reportExit reports how the child ended: its exit status, or the signal
// that killed it.
func (s *session) reportExit(state *os.ProcessState) {
	if state == nil {
		s.exitWith(255)
		return
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		s.exitWith(state.ExitCode())
		return
	}
	name := signalName(ws.Signal())
	if name == "" {
		s.exitWith(128 + int(ws.Signal())) // the shell's convention
		return
	}
	s.log.Debug("session job ended", "signal", name)
	_ = s.ch.CloseWrite()
	_, _ = s.ch.SendRequest("exit-signal", false, ssh.Marshal(exitSignalMsg{
		Signal:     name,
		CoreDumped: ws.CoreDump(),
	}))
	_ = s.ch.Close()
}

// exitWith sends EOF, the exit status and closes the channel, in the order
// RFC 4254 describes and OpenSSH clients expect. Errors mean the client is
// gone already, which leaves nothing to report to.
func (s *session) exitWith(status int) {
	s.log.Debug("session job ended", "status", status)
	_ = s.ch.CloseWrite()
	_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatusMsg{Status: uint32(status)}))
	_ = s.ch.Close()
}
