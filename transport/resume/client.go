package resume

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/warren-proxy/warren/transport/streams"
)

// handshakeWait bounds one hop's handshake.
const handshakeWait = 10 * time.Second

// ClientConfig configures the entry proxy's end of a session.
type ClientConfig struct {
	// SessionID names the session at the agent; AgentID is the agent's
	// identity, which every resume token is bound to.
	SessionID, AgentID string
	// Window is the session's window each way (DefaultWindow if zero).
	Window int
	// Detach is how long the session waits for a new hop before it ends
	// with ErrDetached, at both ends.
	Detach time.Duration
	// Redial opens a new hop to the same agent through any path there is,
	// or says why it cannot. Each call is bounded by ctx.
	Redial func(ctx context.Context) (streams.Stream, error)
	// Detached and Resumed, if set, are told when the session loses its
	// hop and when it runs again (after how long, over which hop number).
	Detached func(err error)
	Resumed  func(stalled time.Duration, hops int)
}

// Client is the entry proxy's end of a session.
type Client struct {
	*Conn
	cfg    ClientConfig
	secret [TokenSize]byte
	gen    uint32
	ctx    context.Context
	cancel context.CancelFunc
}

// Start begins a session over its first hop, first: it sends the session's
// Hello and waits for the agent's Welcome. On an error the caller still
// owns first.
func Start(ctx context.Context, first streams.Stream, cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.Window == 0:
		cfg.Window = DefaultWindow
	case cfg.Window < minWindow || cfg.Window > MaxWindow:
		return nil, fmt.Errorf("resume: window %d outside [%d, %d]", cfg.Window, minWindow, MaxWindow)
	}
	if cfg.Detach <= 0 || cfg.Detach > MaxDetach || cfg.Redial == nil {
		return nil, fmt.Errorf("resume: a detach time in (0, %s] and Redial are required", MaxDetach)
	}
	cl := &Client{Conn: newConn(cfg.SessionID, uint64(cfg.Window)), cfg: cfg}
	if _, err := rand.Read(cl.secret[:]); err != nil {
		return nil, err
	}
	h := hello{mode: modeStart, id: cfg.SessionID, window: uint32(cfg.Window), detach: cfg.Detach, token: cl.secret}
	w, err := exchange(ctx, first, h)
	if err != nil {
		return nil, err
	}
	if w.received != 0 {
		return nil, fmt.Errorf("resume: the agent holds %d bytes of a new session", w.received)
	}
	cl.ctx, cl.cancel = context.WithCancel(context.Background())
	cl.onDetach = cl.detached
	cl.onDone = func(error) { cl.cancel() }
	if _, err := cl.attach(first, 0, nil); err != nil {
		cl.cancel()
		return nil, err
	}
	return cl, nil
}

// exchange sends a Hello on s and reads the Welcome, within ctx and
// handshakeWait; a refusal is an error.
func exchange(ctx context.Context, s streams.Stream, h hello) (welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeWait)
	defer cancel()
	type result struct {
		w   welcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		if _, err := s.Write(h.marshal()); err != nil {
			done <- result{err: fmt.Errorf("send hello: %w", err)}
			return
		}
		w, err := readWelcome(s)
		done <- result{w, err}
	}()
	select {
	case r := <-done:
		if r.err == nil && r.w.status != statusOK {
			r.err = &RefusedError{Reason: r.w.msg}
		}
		return r.w, r.err
	case <-ctx.Done():
		// Closing the hop ends the handshake's goroutine.
		s.Close()
		<-done
		return welcome{}, fmt.Errorf("no welcome from the agent: %w", context.Cause(ctx))
	}
}

// ErrGone, wrapped in an error from Redial, says no new hop will come
// (the agent is gone): the session ends at once.
var ErrGone = errors.New("the other end is gone")

// RefusedError is an agent's refusal of a hop: it does not hold the
// session, or the token is not good. Another hop would be refused too.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "the agent refused to resume the session: " + e.Reason }

// detached runs when the hop fails: it looks for a new one until the
// detach time is over.
func (cl *Client) detached(err error) {
	go cl.redial(err)
}

func (cl *Client) redial(why error) {
	start := time.Now()
	deadline := start.Add(cl.cfg.Detach)
	if cl.cfg.Detached != nil {
		cl.cfg.Detached(why)
	}
	wait := 50 * time.Millisecond
	var last error
	for time.Now().Before(deadline) && cl.ctx.Err() == nil {
		err := cl.tryOnce(deadline)
		if err == nil {
			if cl.cfg.Resumed != nil {
				cl.cfg.Resumed(time.Since(start), cl.Hops())
			}
			return
		}
		last = err
		var refused *RefusedError
		if errors.As(err, &refused) || errors.Is(err, ErrGone) {
			break
		}
		t := time.NewTimer(min(wait, time.Until(deadline)))
		select {
		case <-t.C:
		case <-cl.ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, time.Second)
	}
	if last == nil {
		last = errors.New("no attempt finished")
	}
	cl.fail(fmt.Errorf("%w (%s): %v", ErrDetached, cl.cfg.Detach, last))
}

// tryOnce dials one new hop and resumes the session over it.
func (cl *Client) tryOnce(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(cl.ctx, deadline)
	defer cancel()
	s, err := cl.cfg.Redial(ctx)
	if err != nil {
		return err
	}
	cl.mu.Lock()
	cl.gen++
	h := hello{mode: modeResume, id: cl.id, received: cl.recv, window: uint32(cl.window), detach: cl.cfg.Detach, gen: cl.gen}
	cl.mu.Unlock()
	h.token = resumeToken(cl.secret, cl.id, cl.cfg.AgentID, h.gen)
	w, err := exchange(ctx, s, h)
	if err != nil {
		s.Close()
		return err
	}
	if _, err := cl.attach(s, w.received, nil); err != nil {
		s.Close()
		return &RefusedError{Reason: err.Error()}
	}
	return nil
}
