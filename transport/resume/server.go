package resume

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/warren-proxy/warren/transport/streams"
)

// Registry is the agent's end: the sessions it holds, by id, so a new hop
// can find its session.
type Registry struct {
	agentID string
	max     int
	// OnNote, if set before the first Accept, is given the notes the
	// entry proxies send for their sessions (text the user should read).
	OnNote func(id, text string)

	mu       sync.Mutex
	sessions map[string]*held
	closed   bool
}

type held struct {
	conn   *Conn
	secret [TokenSize]byte
	gen    uint32
	detach time.Duration
	timer  *time.Timer
	// ended: the session ended cleanly at this end, and lingers so that
	// the entry proxy, if it lost the last frames with a hop, can resume
	// only to learn so. tail is what such a hop is told: a Welcome with
	// the bytes this end received, then the end of its stream.
	ended bool
	tail  []byte
}

// linger is how long a session that ended cleanly is remembered (at most
// its detach time).
const linger = 10 * time.Second

// NewRegistry returns the registry of the agent agentID, which holds at
// most max sessions at once.
func NewRegistry(agentID string, max int) *Registry {
	return &Registry{agentID: agentID, max: max, sessions: map[string]*held{}}
}

// Len is how many live sessions the registry holds (not counting those
// that ended and linger).
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, hs := range r.sessions {
		if !hs.ended {
			n++
		}
	}
	return n
}

// Holds says whether the registry holds session id (or remembers it
// ended).
func (r *Registry) Holds(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id] != nil
}

// Accept reads a hop's Hello. A new session returns its Conn, which the
// caller serves (it ends on its own once both ends are done, or after its
// detach time without a hop); a resumed one returns nil, the session
// having moved onto the hop. hopDone is closed once the session stops
// using s. On an error the hop was refused and closed.
func (r *Registry) Accept(s streams.Stream) (c *Conn, hopDone <-chan struct{}, err error) {
	timer := time.AfterFunc(handshakeWait, func() { s.Close() })
	h, err := readHello(s)
	if !timer.Stop() && err == nil {
		err = fmt.Errorf("no hello within %s", handshakeWait)
	}
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if h.mode == modeStart {
		return r.start(s, h)
	}
	hp, err := r.resume(s, h)
	if err != nil {
		return nil, nil, err
	}
	return nil, hp.dead, nil
}

// refuse answers a hop with a refusal and closes it.
func refuse(s streams.Stream, reason string) error {
	_, _ = s.Write(welcome{status: statusRefused, msg: reason}.marshal())
	s.Close()
	return fmt.Errorf("refused hop: %s", reason)
}

func (r *Registry) start(s streams.Stream, h hello) (*Conn, <-chan struct{}, error) {
	window := int(h.window)
	if window < minWindow || window > MaxWindow {
		return nil, nil, refuse(s, fmt.Sprintf("window %d outside [%d, %d]", window, minWindow, MaxWindow))
	}
	if h.detach <= 0 || h.detach > MaxDetach {
		return nil, nil, refuse(s, fmt.Sprintf("detach time %s outside (0, %s]", h.detach, MaxDetach))
	}
	c := newConn(h.id, uint64(window))
	hs := &held{conn: c, secret: h.token, detach: h.detach}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return nil, nil, refuse(s, "the agent is shutting down")
	case r.sessions[h.id] != nil:
		r.mu.Unlock()
		return nil, nil, refuse(s, fmt.Sprintf("session %s is already held", h.id))
	case len(r.sessions) >= r.max:
		r.mu.Unlock()
		return nil, nil, refuse(s, fmt.Sprintf("the agent holds %d sessions, its most", r.max))
	}
	r.sessions[h.id] = hs
	r.mu.Unlock()
	c.onDetach = func(error) { r.detached(hs) }
	if r.OnNote != nil {
		id := h.id
		c.onNote = func(text string) { r.OnNote(id, text) }
	}
	c.onDone = func(err error) { r.ended(hs, err) }
	hp, err := c.attach(s, 0, func(uint64) []byte { return welcome{status: statusOK}.marshal() })
	if err != nil {
		return nil, nil, err
	}
	return c, hp.dead, nil
}

func (r *Registry) resume(s streams.Stream, h hello) (*hop, error) {
	r.mu.Lock()
	hs := r.sessions[h.id]
	if hs == nil {
		r.mu.Unlock()
		return nil, refuse(s, fmt.Sprintf("agent %s does not hold session %s (it ended, or the agent restarted)", r.agentID, h.id))
	}
	want := resumeToken(hs.secret, h.id, r.agentID, h.gen)
	if !hmac.Equal(want[:], h.token[:]) {
		r.mu.Unlock()
		return nil, refuse(s, "bad resume token")
	}
	if h.gen <= hs.gen {
		r.mu.Unlock()
		return nil, refuse(s, fmt.Sprintf("resume attempt %d was already used", h.gen))
	}
	hs.gen = h.gen
	if hs.ended {
		tail := hs.tail
		r.mu.Unlock()
		_, _ = s.Write(tail)
		s.Close()
		dead := make(chan struct{})
		close(dead)
		return &hop{dead: dead}, nil
	}
	if hs.timer != nil {
		hs.timer.Stop()
		hs.timer = nil
	}
	r.mu.Unlock()
	return hs.conn.attach(s, h.received, func(received uint64) []byte {
		return welcome{status: statusOK, received: received}.marshal()
	})
}

// Close ends every session the registry holds, and refuses new ones: each
// is closed as its app would close it (what it wrote goes out, then the
// close frame, so the entry proxy ends it at once instead of looking for a
// new path), for at most wait; those not done by then are cut.
func (r *Registry) Close(wait time.Duration) {
	r.mu.Lock()
	r.closed = true
	all := make([]*held, 0, len(r.sessions))
	for id, hs := range r.sessions {
		if hs.ended {
			hs.timer.Stop()
			delete(r.sessions, id)
			continue
		}
		all = append(all, hs)
	}
	r.mu.Unlock()
	for _, hs := range all {
		hs.conn.Close()
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for _, hs := range all {
		select {
		case <-hs.conn.Done():
		case <-deadline.C:
			for _, hs := range all {
				hs.conn.fail(errors.New("the agent shut down"))
			}
			return
		}
	}
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

// ended forgets a session that ended with err; one that ended cleanly
// lingers first.
func (r *Registry) ended(hs *held, err error) {
	c := hs.conn
	c.mu.Lock()
	tail := welcome{status: statusOK, received: c.recv}.marshal()
	if c.finWanted && c.acked == c.sent {
		tail = append(tail, fFin)
		tail = binary.BigEndian.AppendUint64(tail, c.sent)
	}
	tail = append(tail, fClose)
	c.mu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if hs.timer != nil {
		hs.timer.Stop()
		hs.timer = nil
	}
	if r.sessions[c.id] != hs {
		return
	}
	if !errors.Is(err, net.ErrClosed) || r.closed {
		delete(r.sessions, c.id)
		return
	}
	hs.ended, hs.tail = true, tail
	hs.timer = time.AfterFunc(min(linger, hs.detach), func() { r.forget(hs) })
}

func (r *Registry) forget(hs *held) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[hs.conn.id] == hs {
		delete(r.sessions, hs.conn.id)
	}
}
