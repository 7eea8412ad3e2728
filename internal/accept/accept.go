// Package accept keeps accept loops alive through the errors that pass,
// such as a process out of file descriptors (EMFILE): like net/http's
// Server.Serve, a loop waits 5 ms after a failed Accept, doubling to at
// most 1 s while the failures last, instead of spinning on the error or
// giving up the listener.
//
// A loop reads:
//
//	var b accept.Backoff
//	for {
//		c, err := ln.Accept()
//		if err != nil {
//			if errors.Is(err, net.ErrClosed) || !accept.Temporary(err) {
//				return err
//			}
//			d := b.Next()
//			log.Warn("accept failed; retrying", "err", err, "in", d)
//			if !accept.Sleep(d, ctx.Done()) {
//				return ctx.Err()
//			}
//			continue
//		}
//		b.Reset()
//		…
//	}
package accept

import (
	"errors"
	"time"
)

// The waits between failed accepts, as net/http's.
const (
	First = 5 * time.Millisecond
	Max   = time.Second
)

// Temporary reports whether err, from Accept, is one that passes: out of
// file descriptors (EMFILE, ENFILE), a connection aborted before it was
// accepted, a timeout.
func Temporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Backoff counts the failed accepts in a row. Its zero value is ready to
// use; it is not safe for concurrent use.
type Backoff struct {
	last time.Duration // the wait Next returned last; 0 after Reset
}

// Next returns the wait before the next Accept, one more having failed:
// First after the first failure, doubling to Max.
func (b *Backoff) Next() time.Duration {
	b.last = min(max(2*b.last, First), Max)
	return b.last
}

// Reset starts over, after an Accept that worked.
func (b *Backoff) Reset() { b.last = 0 }

// Sleep waits d, and reports true; or reports false as soon as done is
// closed (a nil done never is).
func Sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
