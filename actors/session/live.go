package session

import "sync"

// Live is the set of sessions running on one proxy, so a proxy that is
// shutting down can count them and warn their users.
type Live struct {
	mu sync.Mutex
	m  map[*Session]struct{}
}

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
