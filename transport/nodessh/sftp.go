package nodessh

import (
	"context"
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
	return serveSFTP(context.Background(), rw, "")
}

// serveSFTP serves SFTP on rw until the client ends the stream or ctx
// ends (which only stops a copy-data in progress: the stream's end is
// what ends the rest); a non-empty workDir is where relative paths start
// (sftp clients begin in the home directory).
//
// github.com/pkg/sftp serves the protocol, behind a filter (sftpFilter)
// that serves what it lacks: the extensions copy-data (sftp's cp),
// fsync@openssh.com (put -f), limits@openssh.com and
// users-groups-by-id@openssh.com (owner names in ls -l), and, because
// copy-data and fsync need the files behind handles, which the library
// keeps to itself, the files: OPEN and every request on a file handle.
// Everything else (paths, directories, the library's own extensions
// posix-rename, statvfs and hardlink) passes through to the library.
//
// Memory stays bounded: the filter holds one request and one reply of at
// most 256 KiB, the library one packet per worker.
func serveSFTP(ctx context.Context, rw io.ReadWriter, workDir string) error {
	libIn, toLib := io.Pipe()
	fromLib, libOut := io.Pipe()
	var opts []sftp.ServerOption
	if workDir != "" {
		opts = append(opts, sftp.WithServerWorkingDirectory(workDir))
	}
	srv, err := sftp.NewServer(pipeConn{libIn, libOut}, opts...)
	if err != nil {
		return fmt.Errorf("start sftp server: %w", err)
	}
	f := newSFTPFilter(ctx, rw, toLib, workDir)
	served := make(chan error, 1)
	go func() {
		err := srv.Serve()
		// Whatever made it stop, the filter must not block on it.
		libIn.Close()
		libOut.Close()
		served <- err
	}()
	pumped := make(chan error, 1)
	go func() { pumped <- f.pump(fromLib) }()

	reqErr := f.serveRequests()
	toLib.Close() // the library reads EOF, finishes its requests and returns
	libErr := <-served
	pumpErr := <-pumped
	f.closeFiles()
	switch {
	case reqErr != nil:
		return fmt.Errorf("serve sftp: %w", reqErr)
	case libErr != nil && !errors.Is(libErr, io.EOF):
		return fmt.Errorf("serve sftp: %w", libErr)
	case pumpErr != nil:
		return fmt.Errorf("serve sftp: %w", pumpErr)
	}
	return nil
}

// pipeConn is the library's side of the two pipes to the filter.
type pipeConn struct {
	*io.PipeReader
	w *io.PipeWriter
}

func (p pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }

func (p pipeConn) Close() error {
	p.PipeReader.Close()
	return p.w.Close()
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
	ctx, cancel := context.WithCancel(s.c.ctx)
	s.job = &job{stop: cancel}
	return true, func() {
		s.tellNotices()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer cancel()
			status := 0
			if err := serveSFTP(ctx, s.ch, acct.workDir()); err != nil {
				s.log.Info("sftp session failed", "err", err)
				status = 1
			}
			s.exitWith(status)
			close(s.done)
		}()
	}
}
