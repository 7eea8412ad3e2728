package revtunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The busy line. A proxy that turns a tunnel connection away before its
// handshake (too many connections logging in, overall or from one
// address) writes one line and closes the connection:
//
//	warren-busy retry-after-ms=NNN\r\n
//
// NNN is a decimal number of milliseconds after which the proxy expects
// room again, jittered by the proxy so that the agents it turns away
// together do not come back together. The line comes where RFC 4253 §4.2
// lets a server send lines before its "SSH-2.0-" version line; SSH
// clients that know nothing of it (x/crypto/ssh, OpenSSH) skip it and
// fail the handshake on the close, as before. It carries nothing secret
// and nothing authenticated: anyone who can answer on a proxy's address
// can send it. So an agent lets it cost a bounded delay and nothing more
// (it retries the same proxy at most a few times, each wait capped at
// MaxBusyRetryAfter, before it treats the proxy as failed), and the line
// must never choose anything else (another proxy, an identity, a
// credential).
//
// Only the first line the proxy sends counts, and only in its first
// maxPreface bytes; fields after "warren-busy" are space-separated
// key=value pairs, unknown keys ignored (room for more without breaking
// older agents).
const busyWord = "warren-busy"

// MaxBusyRetryAfter caps the wait a busy line can ask for: a longer hint
// is read as this.
const MaxBusyRetryAfter = 5 * time.Second

// DefaultBusyRetryAfter is the wait read from a busy line whose
// retry-after-ms is missing or no number.
const DefaultBusyRetryAfter = time.Second

// busyWriteTimeout bounds the write of a busy line. A connection just
// accepted has an empty send buffer, so the write is one system call
// that does not wait; the deadline is there so that no peer can make it
// wait longer than this.
const busyWriteTimeout = 10 * time.Millisecond

// maxPreface bounds the bytes a tunnel client keeps of what the proxy sent
// first, to look for a busy line in: the line is far shorter, and
// whatever else comes first (garbage, an endless line) costs no memory
// beyond this.
const maxPreface = 256

// BusyLine returns the line a proxy writes to a connection it turns away,
// asking the agent to come back after retryAfter (rounded down to the
// millisecond, at least 0).
func BusyLine(retryAfter time.Duration) []byte {
	return []byte(busyWord + " retry-after-ms=" + strconv.FormatInt(max(retryAfter.Milliseconds(), 0), 10) + "\r\n")
}

// WriteBusy writes the busy line to a connection the proxy is turning
// away (the caller closes it), waiting at most busyWriteTimeout: the
// proxy's accept loop calls it, and must not wait on a peer.
func WriteBusy(nc net.Conn, retryAfter time.Duration) error {
	if err := nc.SetWriteDeadline(time.Now().Add(busyWriteTimeout)); err != nil {
		return err
	}
	_, err := nc.Write(BusyLine(retryAfter))
	return err
}

// BusyError is the error Dial and Join return (wrapped) when the proxy
// turned the connection away with a busy line: nothing is wrong with the
// proxy but its load; try it again after RetryAfter. RetryAfter comes
// from the unauthenticated line, capped at MaxBusyRetryAfter.
type BusyError struct {
	RetryAfter time.Duration
	Err        error // the handshake's own error (the proxy closed)
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("the proxy is busy (too many connections logging in) and asks to be tried again in %s: %v", e.RetryAfter, e.Err)
}

func (e *BusyError) Unwrap() error { return e.Err }

// ParseBusy reads what a proxy sent before the handshake failed: a busy
// line as its first line gives the wait it asks for (capped at
// MaxBusyRetryAfter; DefaultBusyRetryAfter when it names none), ok
// false anything else. Only the first maxPreface bytes are looked at.
func ParseBusy(preface []byte) (retryAfter time.Duration, ok bool) {
	preface = preface[:min(len(preface), maxPreface)]
	end := bytes.IndexByte(preface, '\n')
	if end < 0 {
		return 0, false
	}
	fields := strings.Fields(string(bytes.TrimSuffix(preface[:end], []byte("\r"))))
	if len(fields) == 0 || fields[0] != busyWord {
		return 0, false
	}
	retryAfter = DefaultBusyRetryAfter
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		if k != "retry-after-ms" {
			continue
		}
		ms, err := strconv.ParseUint(v, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && ms > uint64(MaxBusyRetryAfter/time.Millisecond):
			retryAfter = MaxBusyRetryAfter // the longest wait, no longer
		case err != nil:
			retryAfter = DefaultBusyRetryAfter // no number
		default:
			retryAfter = time.Duration(ms) * time.Millisecond
		}
	}
	return retryAfter, true
}

// prefaceConn keeps the first maxPreface bytes read from the proxy: a
// busy line, if the handshake fails, is among them.
type prefaceConn struct {
	net.Conn
	full atomic.Bool // maxPreface bytes kept: Read no longer looks
	mu   sync.Mutex  // guards buf (the handshake's reader may still run)
	buf  []byte
}

func (c *prefaceConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.full.Load() {
		c.mu.Lock()
		keep := min(n, maxPreface-len(c.buf))
		c.buf = append(c.buf, b[:keep]...)
		if len(c.buf) >= maxPreface {
			c.full.Store(true)
		}
		c.mu.Unlock()
	}
	return n, err
}

// busy returns err as a *BusyError when what the proxy sent first was a
// busy line, else err.
func (c *prefaceConn) busy(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := ParseBusy(c.buf); ok {
		return &BusyError{RetryAfter: d, Err: err}
	}
	return err
}
