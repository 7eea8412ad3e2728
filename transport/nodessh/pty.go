package nodessh

import (
	"fmt"
	"math"
	"os"
	"syscall"
	"unsafe"

	"github.com/creack/pty"
)

// openPTY opens a new PTY pair. The master comes back in non-blocking mode
// and registered with the runtime poller, so that Close unblocks a pending
// Read: creack/pty hands out a blocking *os.File (it calls Fd), and a
// blocked Read on that cannot be interrupted, which would leave a copier
// goroutine behind when a session is aborted.
func openPTY() (master, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	defer m.Close()
	// F_DUPFD_CLOEXEC: a plain dup would leak the master into children
	// forked by other sessions meanwhile.
	fd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, m.Fd(), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		t.Close()
		return nil, nil, fmt.Errorf("dup pty master: %w", errno)
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		syscall.Close(int(fd))
		t.Close()
		return nil, nil, fmt.Errorf("set pty master non-blocking: %w", err)
	}
	return os.NewFile(fd, m.Name()), t, nil
}

// setWinsize resizes the PTY. It goes through SyscallConn rather than
// pty.Setsize, which would call Fd and put the master back in blocking mode.
func setWinsize(master *os.File, ws *pty.Winsize) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(ws)))
	}); err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	if errno != 0 {
		return fmt.Errorf("resize pty: %w", errno)
	}
	return nil
}

// winsize converts the 32-bit sizes of the SSH messages, clamping what does
// not fit the kernel's 16-bit fields.
func winsize(cols, rows, width, height uint32) pty.Winsize {
	c16 := func(v uint32) uint16 { return uint16(min(v, math.MaxUint16)) }
	return pty.Winsize{Cols: c16(cols), Rows: c16(rows), X: c16(width), Y: c16(height)}
}

// foregroundGroup is the process group in the foreground of the PTY: the
// job an interactive shell is running, which is what a terminal user's
// ^C would reach.
func foregroundGroup(master *os.File) (int, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("foreground group: %w", err)
	}
	var pgrp int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp)))
	}); err != nil {
		return 0, fmt.Errorf("foreground group: %w", err)
	}
	if errno != 0 {
		return 0, fmt.Errorf("foreground group: %w", errno)
	}
	return int(pgrp), nil
}
