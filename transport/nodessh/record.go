package nodessh

import (
	"io"

	"golang.org/x/crypto/ssh"
)

// RecordInfo describes a PTY session whose job is about to start, for
// Config.Record.
type RecordInfo struct {
	Login string
	Cert  *ssh.Certificate
	// Term, Cols and Rows are the terminal the client asked for.
	Term       string
	Cols, Rows int
	// Command is what an exec runs; empty for a shell.
	Command string
	// Shell is the login's shell.
	Shell string
	// Channel numbers the session channels of the connection from 1: a
	// multiplexed connection (ControlMaster) may run several.
	Channel int
}

// Recorder takes a PTY session's terminal traffic: what the terminal
// showed (before the client sees it), what the user typed, and resizes.
// Its methods are called from different goroutines. An error from Output,
// Input or Resize ends the session, with the error's text on the user's
// terminal: a recorder that may lose data without ending the session
// returns nil. Close is called once, after the last output.
type Recorder interface {
	Output(p []byte) error
	Input(p []byte) error
	Resize(cols, rows int) error
	Close() error
}

// startRecording asks Config.Record for a recorder of the PTY job about
// to start. It returns why the job may not run, if the hook refused.
func (s *session) startRecording(command string) (Recorder, string) {
	record := s.c.srv.cfg.Record
	if record == nil || s.pty == nil {
		return nil, ""
	}
	rec, err := record(s.c.nc, RecordInfo{
		Login:   s.c.sc.User(),
		Cert:    s.c.cert,
		Term:    s.pty.term,
		Cols:    int(s.pty.size.Cols),
		Rows:    int(s.pty.size.Rows),
		Command: command,
		Shell:   s.c.acct.shell,
		Channel: s.id,
	})
	if err != nil {
		s.log.Warn("session refused: it cannot be recorded", "err", err)
		return nil, err.Error()
	}
	return rec, ""
}

// recordFailed ends the job of a session whose recording failed, once,
// telling the user why.
func (s *session) recordFailed(j *job, err error) {
	s.recOnce.Do(func() {
		s.log.Warn("session ends: its recording failed", "err", err)
		_, _ = s.ch.Stderr().Write([]byte("\r\nwarren: " + err.Error() + "\r\n"))
		go j.abort()
	})
}

// recordingReader hands what the client typed to the recorder on its way
// to the PTY.
type recordingReader struct {
	r io.Reader
	s *session
	j *job
}

func (rr recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if n > 0 {
		if rerr := rr.s.rec.Input(p[:n]); rerr != nil {
			rr.s.recordFailed(rr.j, rerr)
			return n, rerr
		}
	}
	return n, err
}
