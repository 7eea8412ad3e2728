package agent

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// homeRule is when a tunnel slot moves to another proxy: tailscale's rule
// for its home DERP region, whose numbers keep a home steady under jitter.
// A proxy's latency is the best round trip measured in the last Window; a
// slot moves only to a proxy better by at least MinGain and by at least
// MinFrac of its own proxy's latency, or home to its region when its
// region's proxies answer again. A proxy that has just come back must
// answer for Settle before a slot moves to it, and a slot stays on a
// proxy at least Dwell: a region that flaps does not drag agents along.
type homeRule struct {
	Window  time.Duration
	MinGain time.Duration
	MinFrac float64
	// Silence is how long a proxy may go unmeasured (the prober stalled)
	// before its figures no longer count.
	Silence time.Duration
	Settle  time.Duration
	Dwell   time.Duration
}

// newHomeRule is the rule for an agent that probes every interval.
func newHomeRule(interval time.Duration) homeRule {
	return homeRule{
		Window: 5 * time.Minute, MinGain: 10 * time.Millisecond, MinFrac: 1.0 / 3,
		Silence: 3 * interval, Settle: interval, Dwell: 3 * interval,
	}
}

type rttSample struct {
	at  time.Time
	rtt time.Duration
}

// proxyRTT is what the prober has measured of one proxy.
type proxyRTT struct {
	samples  []rttSample // within the window, oldest first
	lastOK   time.Time
	lastFail time.Time
	okSince  time.Time // first answer since the last failure
}

// rtts holds the round trips measured to each proxy. Not safe for
// concurrent use: the directory's mutex guards it.
type rtts struct {
	rule homeRule
	m    map[string]*proxyRTT
}

func newRTTs(rule homeRule) *rtts { return &rtts{rule: rule, m: map[string]*proxyRTT{}} }

// observe records a probe of proxy id at now: its round trip, or a
// failure when rtt < 0.
func (r *rtts) observe(id string, rtt time.Duration, now time.Time) {
	p := r.m[id]
	if p == nil {
		p = &proxyRTT{}
		r.m[id] = p
	}
	if rtt < 0 {
		p.lastFail, p.okSince = now, time.Time{}
		return
	}
	if p.okSince.IsZero() {
		p.okSince = now
	}
	p.lastOK = now
	i := 0
	for i < len(p.samples) && now.Sub(p.samples[i].at) > r.rule.Window {
		i++
	}
	p.samples = append(p.samples[i:], rttSample{now, rtt})
}

// latency is the best round trip to id in the window; ok is false when id
// did not answer its last probe, or was not measured lately.
func (r *rtts) latency(id string, now time.Time) (best time.Duration, ok bool) {
	p := r.m[id]
	if p == nil || p.lastOK.Before(p.lastFail) || now.Sub(p.lastOK) > r.rule.Silence {
		return 0, false
	}
	best = -1
	for _, s := range p.samples {
		if now.Sub(s.at) <= r.rule.Window && (best < 0 || s.rtt < best) {
			best = s.rtt
		}
	}
	return best, best >= 0
}

// failing reports whether id's last probe failed.
func (r *rtts) failing(id string) bool {
	p := r.m[id]
	return p != nil && p.lastFail.After(p.lastOK)
}

// settled reports whether id has answered for Settle since it last failed.
func (r *rtts) settled(id string, now time.Time) bool {
	_, ok := r.latency(id, now)
	return ok && now.Sub(r.m[id].okSince) >= r.rule.Settle
}

// answeredSince reports whether id has answered every probe since at.
func (r *rtts) answeredSince(id string, at time.Time) bool {
	p := r.m[id]
	return p != nil && p.okSince.After(at)
}

// keep forgets the proxies not in ids.
func (r *rtts) keep(ids map[string]bool) {
	for id := range r.m {
		if !ids[id] {
			delete(r.m, id)
		}
	}
}

// clearlyBetter reports whether a proxy at rtt is worth moving to from
// one at cur.
func (r homeRule) clearlyBetter(rtt, cur time.Duration) bool {
	gain := cur - rtt
	return gain >= r.MinGain && float64(gain) >= r.MinFrac*float64(cur)
}

// probeTimeout bounds one probe: a proxy slower than this to accept a
// connection is no home.
const probeTimeout = 2 * time.Second

// maxProbes bounds the probes one agent has in flight.
const maxProbes = 8

// probe measures the round trip to every known proxy now, then every
// ProbeInterval (jittered, so that agents started together spread out),
// and soon after the proxy set changes, until ctx ends. After a change it
// waits a random part of changeSpread first: a proxy's loss changes the
// set of every agent at once, and their probes should not all land on
// the proxies left in the same instant as their reconnections.
func (a *Agent) probe(ctx context.Context) {
	interval := a.cfg.ProbeInterval
	for {
		changed := a.dir.changes()
		a.probeAll(ctx)
		t := time.NewTimer(interval*9/10 + rand.N(interval/5+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-changed:
			t.Stop()
			if !sleep(ctx, rand.N(min(interval/4, changeSpread)+1)) {
				return
			}
		}
	}
}

// changeSpread bounds the wait before the probes that follow a change of
// the proxy set.
const changeSpread = 2 * time.Second

// probeAll measures every known proxy once, a few at a time.
func (a *Agent) probeAll(ctx context.Context) {
	sem := make(chan struct{}, maxProbes)
	var wg sync.WaitGroup
	for _, p := range a.dir.known() {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			rtt := probeTCP(ctx, p.TunnelAddr, probeTimeout)
			if ctx.Err() == nil {
				a.dir.observe(p.ID, rtt, a.cfg.Clock())
			}
		}()
	}
	wg.Wait()
}

// probeTCP returns the time a TCP connection to addr takes to open (one
// round trip: the SYN and its answer), or -1 when it does not open. The
// connection is reset, not closed: no TIME_WAIT is left behind here, and
// the proxy sees a connection that ended before a byte was sent, which
// it does not log as a failed handshake.
func probeTCP(ctx context.Context, addr string, timeout time.Duration) time.Duration {
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return -1
	}
	rtt := time.Since(start)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
	return rtt
}
