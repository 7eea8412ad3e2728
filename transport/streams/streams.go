// Package streams moves bytes between two full-duplex streams: the user's
// channel and the tunnel channel on a proxy, the tunnel channel and the
// upstream socket on an agent.
//
// Both directions run at once, each through one fixed 32 KiB buffer, so a
// session's memory is bounded whatever the peers do; flow control is left
// to the streams themselves (SSH channel windows, TCP windows). When one
// direction reaches EOF it half-closes the other side (CloseWrite) so EOF
// semantics survive the hop; the copy ends when both directions are done
// or either side fails.
package streams

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Stream is what Pipe needs of each side.
type Stream interface {
	io.Reader
	io.Writer
	io.Closer
}

// closeWriter is implemented by *net.TCPConn, ssh.Channel and ChannelConn.
type closeWriter interface{ CloseWrite() error }

// Result says how many bytes went each way.
type Result struct {
	AtoB, BtoA int64
	Err        error // the first error that was not a plain EOF or close
}

// Pipe copies a→b and b→a until both directions end, then closes both.
func Pipe(a, b Stream) Result {
	var (
		wg  sync.WaitGroup
		res Result
		mu  sync.Mutex
	)
	record := func(err error) {
		if err == nil || isClosed(err) {
			return
		}
		mu.Lock()
		if res.Err == nil {
			res.Err = err
		}
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := copyHalf(b, a)
		res.AtoB = n
		record(err)
		if err != nil {
			// A failed direction ends the whole session: unblock the other.
			a.Close()
			b.Close()
		}
	}()
	n, err := copyHalf(a, b)
	res.BtoA = n
	record(err)
	if err != nil {
		a.Close()
		b.Close()
	}
	wg.Wait()
	a.Close()
	b.Close()
	return res
}

// copyHalf copies src to dst and half-closes dst at EOF.
func copyHalf(dst, src Stream) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil && !isClosed(err) {
			return n, err
		}
		return n, nil
	}
	return n, dst.Close()
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo so CopyBuffer uses our
// pooled buffer instead of allocating one per call.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// SetNoDelay turns Nagle off on TCP conns so small interactive writes are
// not held back; other conns are left alone.
func SetNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// ChannelConn adapts an ssh.Channel to net.Conn so that an SSH server or
// any net.Conn consumer can run on top of a tunnel channel. Deadlines are
// not supported by SSH channels; the setters are no-ops and callers rely on
// closing the channel instead.
type ChannelConn struct {
	ssh.Channel
	Local, Remote net.Addr
}

var _ net.Conn = (*ChannelConn)(nil)

func (c *ChannelConn) LocalAddr() net.Addr              { return addrOr(c.Local) }
func (c *ChannelConn) RemoteAddr() net.Addr             { return addrOr(c.Remote) }
func (c *ChannelConn) SetDeadline(time.Time) error      { return nil }
func (c *ChannelConn) SetReadDeadline(time.Time) error  { return nil }
func (c *ChannelConn) SetWriteDeadline(time.Time) error { return nil }

type channelAddr struct{}

func (channelAddr) Network() string { return "warren-tunnel" }
func (channelAddr) String() string  { return "tunnel" }

func addrOr(a net.Addr) net.Addr {
	if a == nil {
		return channelAddr{}
	}
	return a
}

// Conn adapts any Stream to net.Conn, as ChannelConn does an SSH channel:
// a resumable session (transport/resume) that the agent's SSH server runs
// on. Deadlines are not supported; CloseWrite half-closes when the stream
// can.
type Conn struct {
	Stream
	Local, Remote net.Addr
}

var _ net.Conn = (*Conn)(nil)

// CloseWrite half-closes the stream, or closes it if it cannot half-close.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Stream.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Stream.Close()
}

func (c *Conn) LocalAddr() net.Addr              { return addrOr(c.Local) }
func (c *Conn) RemoteAddr() net.Addr             { return addrOr(c.Remote) }
func (c *Conn) SetDeadline(time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }
