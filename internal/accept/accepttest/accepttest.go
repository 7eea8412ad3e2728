// Package accepttest helps test accept loops: a listener that fails as a
// process out of file descriptors does, then accepts for real.
package accepttest

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// EMFILEListener fails its first Fail Accepts with EMFILE, then accepts
// from Listener.
type EMFILEListener struct {
	net.Listener
	Fail   int32
	failed atomic.Int32
}

// Accept fails with EMFILE until Fail failures have been returned.
func (l *EMFILEListener) Accept() (net.Conn, error) {
	if l.failed.Load() < l.Fail {
		l.failed.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Failed is how many Accepts have failed so far.
func (l *EMFILEListener) Failed() int32 { return l.failed.Load() }
