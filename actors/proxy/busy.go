package proxy

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/warren-proxy/warren/internal/gate"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// busyQueue chooses the wait the busy line asks of each connection the
// handshake caps turn away, so that those turned away together come back
// one after another at about the pace the proxy admits them: a fleet of
// agents behind one address, re-homing here at once, is handed return
// times a slot's turnover apart (the mean handshake over the cap's
// slots), from now on, like tickets. Agents that come back at their time
// mostly find room, instead of most of them being turned away again and
// again (each costing both ends a TCP connection). The times run out at
// revtunnel.MaxBusyRetryAfter: further out, agents get the longest wait
// and a place in the queue again when they return.
//
// The zero value is ready; safe for concurrent use.
type busyQueue struct {
	mu        sync.Mutex
	handshake time.Duration        // mean agents' handshake (moving average)
	next      map[string]time.Time // per gate key ("" for the overall cap): the latest return time handed out
}

const (
	// busyMinWait is the shortest wait a busy line asks for: less is
	// not worth an agent's reconnection.
	busyMinWait = 250 * time.Millisecond
	// busyFirstHandshake stands for the mean handshake until one is
	// measured.
	busyFirstHandshake = 500 * time.Millisecond
	// busyKeys bounds the return times kept: only addresses turned away
	// for their own cap have one (at most Max/MaxPerIP at a time), plus
	// the overall cap's; past times are dropped beyond this many.
	busyKeys = 64
)

// observe records how long an agent's handshake took (admitted to done).
func (q *busyQueue) observe(d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.handshake == 0 {
		q.handshake = d
		return
	}
	q.handshake += (d - q.handshake) / 8
}

// wait returns the wait to ask of a connection turned away now under a
// cap of slots (its key: the gate's for the address, or "" overall): the
// next return time in that cap's queue, at least busyMinWait, at most
// revtunnel.MaxBusyRetryAfter, ±10 %.
func (q *busyQueue) wait(key string, slots int, now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.handshake
	if h <= 0 {
		h = busyFirstHandshake
	}
	at := q.next[key]
	if at.Before(now) {
		at = now
	}
	at = at.Add(h / time.Duration(max(slots, 1)))
	if last := now.Add(revtunnel.MaxBusyRetryAfter); at.After(last) {
		at = last
	}
	if q.next == nil {
		q.next = map[string]time.Time{}
	}
	_, kept := q.next[key]
	if !kept && len(q.next) >= busyKeys {
		for k, t := range q.next {
			if t.Before(now) {
				delete(q.next, k)
			}
		}
	}
	if kept || key == "" || len(q.next) < busyKeys {
		q.next[key] = at
	}
	d := max(at.Sub(now), busyMinWait)
	return d - d/10 + rand.N(d/5+1)
}

// turnAway closes a tunnel connection the handshake caps refuse, after a
// busy line (revtunnel.WriteBusy: at most a few milliseconds, on the
// accept loop's goroutine; a connection just accepted has room for it)
// that tells an agent when to come back rather than take this proxy for
// failed. The refusal is logged, sampled: anyone can repeat it at will.
func (p *Proxy) turnAway(nc net.Conn, refusal string) {
	key, slots := "", p.tunnelGate.Max
	if refusal == gate.RefusedPerIP {
		key, slots = gate.AddrKey(nc.RemoteAddr()), p.tunnelGate.MaxPerIP
	}
	wait := p.busy.wait(key, slots, time.Now())
	told := revtunnel.WriteBusy(nc, wait) == nil
	nc.Close()
	p.refusedConns.Event("remote", nc.RemoteAddr().String(), "reason", refusal, "told_busy", told, "retry_after", wait.Round(time.Millisecond))
}
