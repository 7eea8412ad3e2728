package nodessh

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
)

// ptyDrainTimeout is how long output may still trickle out of a PTY after
// the session leader exited. Linux reports the end (EIO) only when every
// holder of the terminal is gone, and a background process that ignored
// the hangup must not keep the session open for ever.
const ptyDrainTimeout = 2 * time.Second

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

	mu     sync.Mutex // guards exited
	exited bool       // the child was reaped: its pid may belong to someone else now
}

// signal delivers sig to the child's process group (the child leads it:
// Setpgid or Setsid), so a shell's foreground children get it too.
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

// abort ends a job whose client is gone: kill the process group if the
// child still runs, and close the parent's stdio ends so every copier
// returns even if a process outside the group still holds the other end.
func (j *job) abort() {
	if j.cmd != nil {
		_ = j.signal(syscall.SIGKILL)
	}
	for _, f := range []*os.File{j.ptmx, j.stdin, j.stdout, j.stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// wait reaps the child and returns how it ended (nil if it could not be
// waited for).
func (j *job) wait() *os.ProcessState {
	_ = j.cmd.Wait() // a non-zero exit is an error here; the state says it all
	j.mu.Lock()
	j.exited = true
	j.mu.Unlock()
	return j.cmd.ProcessState
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
		env = append(env, "SSH_CONNECTION="+s.c.sshConn)
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
		j, err = startWithPTY(cmd, &s.pty.size)
	} else {
		j, err = startWithPipes(cmd)
	}
	if err != nil {
		s.log.Warn("start session job", "kind", kind.String(), "err", err)
		return false, nil
	}
	s.job = j
	s.log.Debug("session job started", "kind", kind.String(), "command", command, "pty", withPTY, "pid", cmd.Process.Pid)
	return true, func() { s.run(j) }
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
	return &job{cmd: cmd, stdin: stdinW, stdout: stdoutR, stderr: stderrR}, nil
}

// startWithPTY runs cmd as a session leader whose controlling terminal is
// a new PTY of the given size.
func startWithPTY(cmd *exec.Cmd, size *pty.Winsize) (*job, error) {
	master, tty, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer tty.Close() // the child has its own; ours would hide the hangup
	if err := setWinsize(master, size); err != nil {
		master.Close()
		return nil, fmt.Errorf("size pty: %w", err)
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
	return &job{cmd: cmd, ptmx: master}, nil
}

// run copies the job's stdio over the channel and reports its end.
func (s *session) run(j *job) {
	outputs := make(chan struct{}, 2) // one token per finished output copier
	n := 0
	copyOut := func(dst io.Writer, src *os.File) {
		n++
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, err := io.Copy(dst, src)
			// EIO is how Linux says every holder of the PTY slave is gone.
			if err != nil && !errors.Is(err, syscall.EIO) && !errors.Is(err, os.ErrClosed) {
				s.log.Debug("copy job output", "err", err)
			}
			if src != j.ptmx { // the PTY is shared with the input copier
				src.Close()
			}
			outputs <- struct{}{}
		}()
	}
	if j.ptmx != nil {
		s.copyIn(j.ptmx, false)
		copyOut(s.ch, j.ptmx)
	} else {
		s.copyIn(j.stdin, true)
		copyOut(s.ch, j.stdout)
		copyOut(s.ch.Stderr(), j.stderr)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		state := j.wait()
		s.awaitOutput(j, outputs, n)
		s.reportExit(state)
		close(s.done)
	}()
}

// awaitOutput waits until all output has been copied. Pipes are drained
// however long a background process keeps them open, as OpenSSH does; a
// PTY gets ptyDrainTimeout after the leader's exit, then is hung up.
func (s *session) awaitOutput(j *job, outputs <-chan struct{}, n int) {
	if j.ptmx == nil {
		for ; n > 0; n-- {
			<-outputs
		}
		return
	}
	t := time.NewTimer(ptyDrainTimeout)
	defer t.Stop()
	for n > 0 {
		select {
		case <-outputs:
			n--
		case <-t.C:
			s.log.Debug("pty still held open after the session leader exited; closing it")
			j.ptmx.Close() // unblocks the reader
		}
	}
	j.ptmx.Close()
}

// copyIn copies the client's data to the job. With closeOnEOF the end of
// the client's data is the end of the job's stdin; a PTY has no such thing
// and stays open.
func (s *session) copyIn(dst *os.File, closeOnEOF bool) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, err := io.Copy(dst, s.ch)
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

// reportExit sends EOF, the exit status (or signal) and closes the channel,
// in the order RFC 4254 describes and OpenSSH clients expect.
func (s *session) reportExit(state *os.ProcessState) {
	_ = s.ch.CloseWrite()
	status := 255
	if state != nil {
		status = state.ExitCode()
		if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			if name := signalName(ws.Signal()); name != "" {
				s.log.Debug("session job ended", "signal", name)
				_, _ = s.ch.SendRequest("exit-signal", false, ssh.Marshal(exitSignalMsg{
					Signal:     name,
					CoreDumped: ws.CoreDump(),
				}))
				_ = s.ch.Close()
				return
			}
			status = 128 + int(ws.Signal()) // the shell's convention
		}
	}
	s.log.Debug("session job ended", "status", status)
	_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatusMsg{Status: uint32(status)}))
	_ = s.ch.Close()
}
