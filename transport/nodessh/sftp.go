package nodessh

import (
	"errors"
	"fmt"
	"io"

	"github.com/pkg/sftp"
)

// ServeSFTP serves the SFTP protocol on rw, with this process's identity,
// until the client ends the stream, then closes rw. Relative paths are
// resolved against the process's working directory. The agent's
// sftp-server subcommand runs it on stdin/stdout; that command is what
// Config.SFTPCommand should name when the agent runs as root, so that
// file access happens as the login user.
func ServeSFTP(rw io.ReadWriteCloser) error {
	defer rw.Close()
	return serveSFTP(rw, "")
}

// serveSFTP serves SFTP on rw; a non-empty workDir is where relative paths
// start (sftp clients begin in the home directory). Memory stays bounded:
// pkg/sftp handles one packet (at most 256 KiB) per worker at a time.
func serveSFTP(rw io.ReadWriteCloser, workDir string) error {
	var opts []sftp.ServerOption
	if workDir != "" {
		opts = append(opts, sftp.WithServerWorkingDirectory(workDir))
	}
	srv, err := sftp.NewServer(rw, opts...)
	if err != nil {
		return fmt.Errorf("start sftp server: %w", err)
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("serve sftp: %w", err)
	}
	return nil
}

// startInProcessSFTP serves the sftp subsystem inside the agent. The agent
// cannot take on another user's identity for a goroutine, so when it runs
// as root it only does so for logins that are root themselves; other
// logins need Config.SFTPCommand.
func (s *session) startInProcessSFTP() (bool, func()) {
	srv, acct := s.c.srv, s.c.acct
	if acct.uid != srv.self.uid {
		s.log.Warn("ssh request refused", "type", "subsystem", "subsystem", "sftp",
			"reason", "in-process sftp would run as "+srv.self.name+", not as "+acct.name+"; set Config.SFTPCommand")
		return false, nil
	}
	s.job = &job{}
	return true, func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			status := 0
			if err := serveSFTP(s.ch, acct.workDir()); err != nil {
				s.log.Info("sftp session failed", "err", err)
				status = 1
			}
			s.exitWith(status)
			close(s.done)
		}()
	}
}
