package session

import (
	"sort"
	"sync"

	"github.com/warren-proxy/warren/internal/model"
)

// Live is the set of sessions running on one proxy, so a proxy that is
// shutting down can count them and warn their users, and its status page
// can list them with the latest failovers. Its zero value is ready.
type Live struct {
	mu sync.Mutex // guards the fields below
	m  map[*Session]struct{}
	// failovers is a ring of the latest failovers; next is where the
	// next one goes, n how many it holds.
	failovers [failoverRing]model.Failover
	next, n   int
}

// failoverRing is how many failovers a proxy keeps for its status page.
const failoverRing = 50

func (l *Live) add(s *Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[*Session]struct{}{}
	}
	l.m[s] = struct{}{}
}

func (l *Live) remove(s *Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, s)
}

// Len is how many sessions run.
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// End ends every running session: a draining proxy's grace is over.
func (l *Live) End() {
	l.mu.Lock()
	all := make([]*Session, 0, len(l.m))
	for s := range l.m {
		all = append(all, s)
	}
	l.mu.Unlock()
	for _, s := range all {
		if s.stop != nil {
			s.stop(nil)
		}
	}
}

// Tell sends text to the user of every running session that can show it
// (a resumable session to an ssh resource: the node writes it on the
// user's terminal), and returns how many it sent it to.
func (l *Live) Tell(text string) int {
	l.mu.Lock()
	all := make([]*Session, 0, len(l.m))
	for s := range l.m {
		all = append(all, s)
	}
	l.mu.Unlock()
	n := 0
	for _, s := range all {
		if s.note(text) {
			n++
		}
	}
	return n
}

// Sessions lists the running sessions, oldest first.
func (l *Live) Sessions() []model.LiveSession {
	l.mu.Lock()
	out := make([]model.LiveSession, 0, len(l.m))
	for s := range l.m {
		out = append(out, s.live())
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Failovers lists the latest failovers (at most failoverRing), newest
// first.
func (l *Live) Failovers() []model.Failover {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]model.Failover, 0, l.n)
	for i := 1; i <= l.n; i++ {
		out = append(out, l.failovers[(l.next-i+failoverRing)%failoverRing])
	}
	return out
}

func (l *Live) addFailover(f model.Failover) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failovers[l.next] = f
	l.next = (l.next + 1) % failoverRing
	l.n = min(l.n+1, failoverRing)
}
