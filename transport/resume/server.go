package resume

import (
	"crypto/hmac"
	"fmt"
	"sync"
	"time"

	"github.com/warren-proxy/warren/transport/streams"
)

// Registry is the agent's end: the sessions it holds, by id, so a new hop
// can find its session.
type Registry struct {
	agentID string
	max     int

	mu       sync.Mutex
	sessions map[string]*held
}

type held struct {
	conn   *Conn
	secret [TokenSize]byte
	gen    uint32
	detach time.Duration
	timer  *time.Timer
}

// NewRegistry returns the registry of the agent agentID, which holds at
// most max sessions at once.
func NewRegistry(agentID string, max int) *Registry {
	return &Registry{agentID: agentID, max: max, sessions: map[string]*held{}}
}

// Len is how many sessions the registry holds.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Holds says whether the registry holds session id.
func (r *Registry) Holds(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id] != nil
}

// Accept reads a hop's Hello. A new session returns its Conn, which the
// caller serves (it ends on its own once both ends are done, or after its
// detach time without a hop); a resumed one returns nil, the session
// having moved onto the hop. On an error the hop was refused and closed.
func (r *Registry) Accept(s streams.Stream) (*Conn, error) {
	timer := time.AfterFunc(handshakeWait, func() { s.Close() })
	h, err := readHello(s)
	if !timer.Stop() && err == nil {
		err = fmt.Errorf("no hello within %s", handshakeWait)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if h.mode == modeStart {
		return r.start(s, h)
	}
	return nil, r.resume(s, h)
}

// refuse answers a hop with a refusal and closes it.
func refuse(s streams.Stream, reason string) error {
	_, _ = s.Write(welcome{status: statusRefused, msg: reason}.marshal())
	s.Close()
	return fmt.Errorf("refused hop: %s", reason)
}

func (r *Registry) start(s streams.Stream, h hello) (*Conn, error) {
	window := int(h.window)
	if window < minWindow || window > MaxWindow {
		return nil, refuse(s, fmt.Sprintf("window %d outside [%d, %d]", window, minWindow, MaxWindow))
	}
	if h.detach <= 0 || h.detach > MaxDetach {
		return nil, refuse(s, fmt.Sprintf("detach time %s outside (0, %s]", h.detach, MaxDetach))
	}
	c := newConn(h.id, uint64(window))
	hs := &held{conn: c, secret: h.token, detach: h.detach}
	r.mu.Lock()
	switch {
	case r.sessions[h.id] != nil:
		r.mu.Unlock()
		return nil, refuse(s, fmt.Sprintf("session %s is already held", h.id))
	case len(r.sessions) >= r.max:
		r.mu.Unlock()
		return nil, refuse(s, fmt.Sprintf("the agent holds %d sessions, its most", r.max))
	}
	r.sessions[h.id] = hs
	r.mu.Unlock()
	c.onDetach = func() { r.detached(hs) }
	c.onDone = func() { r.forget(hs) }
	if err := c.attach(s, 0, func(uint64) []byte { return welcome{status: statusOK}.marshal() }); err != nil {
		return nil, err
	}
	return c, nil
}

func (r *Registry) resume(s streams.Stream, h hello) error {
	r.mu.Lock()
	hs := r.sessions[h.id]
	if hs == nil {
		r.mu.Unlock()
		return refuse(s, fmt.Sprintf("agent %s does not hold session %s (it ended, or the agent restarted)", r.agentID, h.id))
	}
	want := resumeToken(hs.secret, h.id, r.agentID, h.gen)
	if !hmac.Equal(want[:], h.token[:]) {
		r.mu.Unlock()
		return refuse(s, "bad resume token")
	}
	if h.gen <= hs.gen {
		r.mu.Unlock()
		return refuse(s, fmt.Sprintf("resume attempt %d was already used", h.gen))
	}
	hs.gen = h.gen
	if hs.timer != nil {
		hs.timer.Stop()
		hs.timer = nil
	}
	r.mu.Unlock()
	return hs.conn.attach(s, h.received, func(received uint64) []byte {
		return welcome{status: statusOK, received: received}.marshal()
	})
}

// detached starts the session's detach clock.
func (r *Registry) detached(hs *held) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[hs.conn.id] != hs || hs.timer != nil {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(hs.detach, func() {
		// Out of the registry first, under its lock: no resume finds
		// the session from here on.
		r.mu.Lock()
		if hs.timer != t || r.sessions[hs.conn.id] != hs {
			r.mu.Unlock()
			return
		}
		delete(r.sessions, hs.conn.id)
		r.mu.Unlock()
		hs.conn.fail(fmt.Errorf("%w (%s)", ErrDetached, hs.detach))
	})
	hs.timer = t
}

func (r *Registry) forget(hs *held) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[hs.conn.id] == hs {
		delete(r.sessions, hs.conn.id)
	}
	if hs.timer != nil {
		hs.timer.Stop()
	}
}
