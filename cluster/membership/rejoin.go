package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// maxRetryBackoff caps the backoff of seeds and failed members that
	// are retried while this proxy is not alone.
	maxRetryBackoff = 30 * time.Second
	// reconnectFor is how long a member declared dead is retried, so that
	// the two sides of a healed partition find each other again after
	// memberlist has forgotten them (it stops gossiping to the dead after
	// GossipToTheDeadTime).
	reconnectFor = 24 * time.Hour
	// logEvery limits repeated warnings about the same failure.
	logEvery = time.Minute
	// resolveTimeout bounds a seed's DNS lookup.
	resolveTimeout = 2 * time.Second
)

// retryState is the backoff of one retry target.
type retryState struct {
	next    time.Time
	backoff time.Duration
}

func (r *retryState) due(now time.Time) bool { return !now.Before(r.next) }

// fail schedules the next attempt: floor, then doubling up to
// maxRetryBackoff (or floor, if that is longer).
func (r *retryState) fail(now time.Time, floor time.Duration) {
	r.backoff = max(floor, min(2*r.backoff, maxRetryBackoff))
	r.next = now.Add(r.backoff)
}

func (r *retryState) ok(now time.Time, recheck time.Duration) {
	r.backoff = 0
	r.next = now.Add(recheck)
}

// failedMember is a member declared dead that we try to reconnect to.
type failedMember struct {
	addr  string
	since time.Time
	retryState
}

// joinError is one refused or failed join attempt.
type joinError struct {
	addr string
	err  error
	key  bool // the keys differ
}

func (e *joinError) Error() string {
	msg := "join " + e.addr + ": " + e.err.Error()
	if e.key {
		msg += " (the gossip encryption keys differ, or only one side has one: check gossip.secret_key on both proxies)"
	}
	return msg
}

func (e *joinError) Unwrap() error { return e.err }

func (e *joinError) Is(target error) bool { return e.key && target == ErrKeyMismatch }

// rejoinLoop keeps this proxy in the cluster. It first tries every seed
// once and closes firstDone. Then, every RejoinInterval:
//   - alone: every seed, each time;
//   - not alone: seeds that are not members (two clusters formed while
//     their seeds were down merge) and members declared dead (a healed
//     partition: memberlist forgets the dead after GossipToTheDeadTime and
//     would never probe them again), with backoff up to 30s;
//   - after a pause (the loop woke far too late, e.g. SIGSTOP): every seed
//     and member at once. The others may have declared this proxy dead, or
//     forgotten it already; a push/pull tells them it is alive and makes it
//     refute their verdict with a higher incarnation.
//
// After Leave it does nothing; Close stops it.
func (m *Membership) rejoinLoop(ml *memberlist.Memberlist, firstDone chan<- struct{}) {
	r := &rejoiner{m: m, ml: ml, seeds: make(map[string]*retryState), logged: make(map[string]time.Time)}
	r.tick(time.Now(), true, false)
	close(firstDone)

	interval := m.set.rejoinInterval
	pauseGap := 2*interval + time.Second
	t := time.NewTicker(interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		now := time.Now()
		paused := now.Sub(last) > pauseGap
		if paused {
			m.log.Warn("membership was stalled (process paused or starved); rejoining at once", "stalled", now.Sub(last).Round(time.Millisecond).String())
		}
		r.tick(now, false, paused)
		last = time.Now()
	}
}

// rejoiner is the rejoin loop's state; only its goroutine touches it.
type rejoiner struct {
	m      *Membership
	ml     *memberlist.Memberlist
	seeds  map[string]*retryState
	logged map[string]time.Time // message key → when last logged above debug
}

type joinTarget struct {
	addr   string
	seed   string // the seed it came from, or ""
	member string // the failed member it is, or ""
}

func (r *rejoiner) tick(now time.Time, first, paused bool) {
	m := r.m
	m.mu.Lock()
	if m.closed || m.left {
		m.mu.Unlock()
		return
	}
	selfAddr := m.self.GossipAddr
	alive := make(map[string]bool, len(m.members))
	for name, mem := range m.members {
		if name != m.cfg.Meta.ProxyID {
			alive[mem.GossipAddr] = true
		}
	}
	alone := len(alive) == 0
	force := first || alone || paused
	var targets []joinTarget
	for name, f := range m.failed {
		switch {
		case now.Sub(f.since) > reconnectFor:
			delete(m.failed, name)
		case alive[f.addr]:
			// Another proxy now answers there: nothing to reconnect.
		case force || f.due(now):
			targets = append(targets, joinTarget{addr: f.addr, member: name})
		}
	}
	m.mu.Unlock()

	var resolveErrs []error
	seeds := m.cfg.Seeds
	if m.seeds != nil { // a region's pool: where the cluster says its proxies are
		seeds = append(slices.Clip(seeds), m.seeds()...)
		for s := range r.seeds {
			if !slices.Contains(seeds, s) {
				delete(r.seeds, s)
			}
		}
	}
	for _, seed := range seeds {
		st := r.seeds[seed]
		if st == nil {
			st = &retryState{}
			r.seeds[seed] = st
		}
		if !force && !st.due(now) {
			continue
		}
		addrs, err := r.resolve(seed)
		if err != nil {
			st.fail(now, m.set.rejoinInterval)
			resolveErrs = append(resolveErrs, fmt.Errorf("resolve seed %s: %w", seed, err))
			m.log.Debug("cannot resolve gossip seed", "seed", seed, "err", err)
			continue
		}
		missing := 0
		for _, a := range addrs {
			if a != selfAddr && !alive[a] {
				targets = append(targets, joinTarget{addr: a, seed: seed})
				missing++
			}
		}
		if missing == 0 {
			st.ok(now, maxRetryBackoff) // a member (or us): check again later
		}
	}
	if paused {
		for a := range alive {
			targets = append(targets, joinTarget{addr: a})
		}
	}

	errs := resolveErrs
	joined, tried := 0, map[string]error{}
	for _, t := range targets {
		err, seen := tried[t.addr]
		if !seen {
			select {
			case <-m.done:
				return
			default:
			}
			err = r.join(t.addr)
			tried[t.addr] = err
			if err != nil {
				m.log.Debug("join attempt failed", "addr", t.addr, "err", err)
				errs = append(errs, err)
			} else {
				joined++
			}
		}
		r.record(t, now, err)
	}

	switch {
	case joined > 0 && alone && !first:
		m.log.Info("joined the cluster", "via", joinedVia(targets, errs))
	case joined > 0 && first:
		m.log.Debug("joined the cluster", "via", joinedVia(targets, errs))
	case joined == 0 && alone && len(errs) > 0:
		r.logf(slog.LevelWarn, "alone", "no gossip seed could be joined; running alone and retrying",
			"every", m.set.rejoinInterval.String(), "err", errors.Join(errs...))
	}
	var problem error
	for _, err := range errs {
		if errors.Is(err, ErrKeyMismatch) {
			r.logf(slog.LevelError, err.Error(), "gossip join refused", "err", err)
			if joined == 0 && alone {
				problem = err
			}
		}
	}
	if joined > 0 || !alone || problem != nil || len(targets) > 0 {
		m.mu.Lock()
		m.problem = problem
		m.mu.Unlock()
	}
}

// record updates the backoff of the seed or failed member t came from.
func (r *rejoiner) record(t joinTarget, now time.Time, err error) {
	floor := r.m.set.rejoinInterval
	if t.seed != "" {
		st := r.seeds[t.seed]
		if err != nil {
			st.fail(now, floor)
		} else {
			st.ok(now, maxRetryBackoff)
		}
	}
	if t.member != "" && err != nil {
		r.m.mu.Lock()
		if f := r.m.failed[t.member]; f != nil {
			f.fail(now, floor)
		}
		r.m.mu.Unlock()
	}
}

// join pushes and pulls full state with one address.
func (r *rejoiner) join(addr string) error {
	n, err := r.ml.Join([]string{addr})
	if n > 0 {
		return nil
	}
	if err == nil {
		err = errors.New("no node answered")
	}
	// memberlist wraps each failure as "failed to join <addr>: <cause>"
	// in a multierror; keep only the cause.
	if me, ok := err.(interface{ WrappedErrors() []error }); ok && len(me.WrappedErrors()) == 1 {
		err = me.WrappedErrors()[0]
	}
	msg := strings.TrimPrefix(err.Error(), "failed to join "+addr+": ")
	if msg != err.Error() {
		err = errors.New(msg)
	}
	return &joinError{addr: addr, err: err, key: strings.Contains(msg, "encrypt") || strings.Contains(msg, "decrypt")}
}

// resolve turns a seed into ip:port addresses.
func (r *rejoiner) resolve(seed string) ([]string, error) {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []string{net.JoinHostPort(ip.Unmap().String(), port)}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.Unmap().String(), port))
	}
	return out, nil
}

// logf logs at level the first time key is seen and then at most every
// logEvery; in between at debug.
func (r *rejoiner) logf(level slog.Level, key, msg string, args ...any) {
	now := time.Now()
	if last, ok := r.logged[key]; ok && now.Sub(last) < logEvery {
		level = slog.LevelDebug
	} else {
		r.logged[key] = now
	}
	r.m.log.Log(context.Background(), level, msg, args...)
}

func joinedVia(targets []joinTarget, errs []error) []string {
	failed := map[string]bool{}
	for _, err := range errs {
		var je *joinError
		if errors.As(err, &je) {
			failed[je.addr] = true
		}
	}
	var via []string
	for _, t := range targets {
		if !failed[t.addr] && !slices.Contains(via, t.addr) {
			via = append(via, t.addr)
		}
	}
	return via
}
