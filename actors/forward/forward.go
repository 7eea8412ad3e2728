// Package forward carries a session from the entry proxy to the tunnel of
// the agent that serves it: the two dialers a session uses (a tunnel on this
// proxy, a tunnel on a peer proxy), the rendezvous where an agent's channel
// waits for its session, and the server side of the peer data streams.
//
// Both paths speak one message family. The session sends a
// [clusterpb.DialRequest] to the tunnel actor; the tunnel opens a channel to
// its agent, parks it in its proxy's [Rendezvous] under a fresh token and
// answers with a [clusterpb.DialResponse] that carries the token and its
// proxy's peer address. [Local] then claims the channel from this proxy's
// rendezvous in place; [Peer] opens a data stream to the peer proxy
// presenting the token, and that proxy's [Server] claims the channel and
// pipes the stream to it. A channel nobody claims within the rendezvous'
// time to live is closed, so an abandoned attempt leaves nothing open at
// the agent.
package forward

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/transport/peer"
	"github.com/warren-proxy/warren/transport/streams"
)

// DefaultParkTTL is how long a parked channel waits for its session to
// claim it. The entry proxy claims it right after the tunnel's answer, one
// peer round trip later; the rest is slack for a loaded proxy.
const DefaultParkTTL = 30 * time.Second

// Rendezvous holds channels that tunnels opened for sessions until the
// session claims them by token. Tokens are 128 random bits, used once.
type Rendezvous struct {
	ttl    time.Duration
	mu     sync.Mutex // guards m and closed
	m      map[string]*parked
	closed bool
}

type parked struct {
	ch    ssh.Channel
	timer *time.Timer
}

// NewRendezvous returns an empty rendezvous whose channels wait at most
// ttl (DefaultParkTTL if ttl <= 0).
func NewRendezvous(ttl time.Duration) *Rendezvous {
	if ttl <= 0 {
		ttl = DefaultParkTTL
	}
	return &Rendezvous{ttl: ttl, m: map[string]*parked{}}
}

// Park keeps ch for whoever presents the returned token within the time to
// live; after it, or once the rendezvous is closed, ch is closed.
func (r *Rendezvous) Park(ch ssh.Channel) (token string, err error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		ch.Close()
		return "", err
	}
	token = hex.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		ch.Close()
		return "", errors.New("the proxy is shutting down")
	}
	r.m[token] = &parked{ch: ch, timer: time.AfterFunc(r.ttl, func() {
		if c := r.Claim(token); c != nil {
			c.Close()
		}
	})}
	return token, nil
}

// Claim takes the channel parked under token, or returns nil if there is
// none (unknown, claimed already, or expired).
func (r *Rendezvous) Claim(token string) ssh.Channel {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.m[token]
	if p == nil {
		return nil
	}
	delete(r.m, token)
	p.timer.Stop()
	return p.ch
}

// Len is the number of channels waiting.
func (r *Rendezvous) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Close closes every waiting channel and every channel parked later.
func (r *Rendezvous) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for token, p := range r.m {
		p.timer.Stop()
		p.ch.Close()
		delete(r.m, token)
	}
}

// ask sends req to the tunnel actor at pid and waits for its answer, or
// for ctx. A tunnel actor that is gone answers at once (dead letter). A
// channel granted after ctx ended is handed to late, if set.
func ask(ctx context.Context, system *actor.ActorSystem, pid *actor.PID, req *clusterpb.DialRequest, late func(*clusterpb.DialResponse)) (*clusterpb.DialResponse, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil, errors.New("dial without a deadline")
	}
	wait := time.Until(deadline)
	if wait <= 0 {
		return nil, context.DeadlineExceeded
	}
	req.TimeoutMs = tunnelShare(wait).Milliseconds()
	// The future outlives the attempt a little, to catch a late answer
	// and free its channel.
	f := system.Root.RequestFuture(pid, req, wait+lateGrace)
	type answer struct {
		v   any
		err error
	}
	done := make(chan answer) // unbuffered: a send succeeds only while ask waits
	// The future cannot be cancelled: after an abandoned dial this
	// goroutine waits for the tunnel's late answer or the future's timeout,
	// at most lateGrace past the attempt.
	go func() {
		v, err := f.Result()
		select {
		case done <- answer{v, err}:
		case <-ctx.Done():
			if resp, ok := v.(*clusterpb.DialResponse); ok && resp.Ok && late != nil {
				late(resp)
			}
		}
	}()
	select {
	case a := <-done:
		if errors.Is(a.err, actor.ErrDeadLetter) {
			return nil, errAgentGone
		}
		if a.err != nil {
			return nil, a.err
		}
		resp, ok := a.v.(*clusterpb.DialResponse)
		if !ok {
			return nil, fmt.Errorf("unexpected answer %T", a.v)
		}
		return resp, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// lateGrace is how long past an abandoned attempt a late answer is still
// taken, so that the channel it grants is closed at once.
const lateGrace = 5 * time.Second

// tunnelShare is the part of an attempt the tunnel may spend on its dial:
// the rest is left for the answer's way back and, on the peer path, for
// opening the data stream.
func tunnelShare(attempt time.Duration) time.Duration {
	return attempt - min(attempt/4, time.Second)
}

var errAgentGone = errors.New("its tunnel just closed")

// answerErr turns a tunnel's refusal into an error: an *AgentRefused
// when the agent itself refused.
func answerErr(resp *clusterpb.DialResponse) error {
	switch {
	case resp.Ok:
		return nil
	case resp.Error == "":
		return errors.New("the tunnel refused the dial")
	case resp.Refused:
		return &AgentRefused{Reason: resp.Error}
	}
	return errors.New(resp.Error)
}

// AgentRefused is an agent's own refusal of a dial (its upstream failed,
// or it does not hold the session a dial resumes), as opposed to a path
// that failed on the way.
type AgentRefused struct{ Reason string }

func (e *AgentRefused) Error() string { return e.Reason }

// Local dials agents whose tunnel is on this proxy: the tunnel parks the
// channel in this proxy's rendezvous, and Local claims it in place.
type Local struct {
	System     *actor.ActorSystem
	Rendezvous *Rendezvous
}

// Dial asks e's tunnel for a channel to its agent, within ctx.
func (l Local) Dial(ctx context.Context, e router.Endpoint, req *clusterpb.DialRequest) (streams.Stream, error) {
	resp, err := ask(ctx, l.System, e.Tunnel, req, func(late *clusterpb.DialResponse) {
		// Nobody waits for it any more: free the agent's channel now
		// rather than when its time to live ends.
		if ch := l.Rendezvous.Claim(late.Token); ch != nil {
			ch.Close()
		}
	})
	if err != nil {
		return nil, err
	}
	if err := answerErr(resp); err != nil {
		return nil, err
	}
	ch := l.Rendezvous.Claim(resp.Token)
	if ch == nil {
		return nil, errors.New("the agent's channel expired before it was claimed")
	}
	return ch, nil
}

// Opener opens a data stream to the peer proxy at addr for the channel
// parked there under token (transport/peer's Dialer).
type Opener interface {
	Open(ctx context.Context, addr, token string) (peer.Stream, error)
}

// Peer dials agents whose tunnel is on another proxy: the peer's tunnel
// actor parks the channel there, and Peer opens a data stream to it.
type Peer struct {
	System  *actor.ActorSystem
	Streams Opener
}

// Dial asks e's tunnel on its proxy for a channel to its agent and opens a
// data stream to it, within ctx. It fails at once when the link to that
// proxy breaks, without waiting for ctx.
func (p Peer) Dial(ctx context.Context, e router.Endpoint, req *clusterpb.DialRequest) (streams.Stream, error) {
	if p.Streams == nil {
		return nil, errors.New("this proxy has no peer links")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sub := p.System.EventStream.Subscribe(func(msg any) {
		if ev, ok := msg.(*remote.EndpointTerminatedEvent); ok && ev.Address == e.Tunnel.Address {
			cancel(fmt.Errorf("proxy %s became unreachable", e.ProxyID))
		}
	})
	defer p.System.EventStream.Unsubscribe(sub)
	// A channel granted too late waits at the peer until its time to live
	// ends.
	resp, err := ask(ctx, p.System, e.Tunnel, req, nil)
	if err != nil {
		return nil, err
	}
	if err := answerErr(resp); err != nil {
		return nil, err
	}
	st, err := p.Streams.Open(ctx, resp.PeerAddr, resp.Token)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause
		}
		return nil, fmt.Errorf("data stream to proxy %s: %w", e.ProxyID, err)
	}
	return st, nil
}

// Server serves the data streams peers open for sessions whose agent's
// tunnel is on this proxy: it claims the parked channel and pipes the
// stream to it.
type Server struct {
	Rendezvous *Rendezvous
	Logger     *slog.Logger
	// Release, once closed, ends every stream being served: a draining
	// proxy sends the sessions it only forwards onto other paths (their
	// entry proxies resume them).
	Release <-chan struct{}
}

// ServeStream joins the stream a peer opened to the channel parked under
// token, until either side ends or ctx is done. Its signature is
// transport/peer's stream handler.
func (s Server) ServeStream(ctx context.Context, peerID, token string, st peer.Stream) error {
	ch := s.Rendezvous.Claim(token)
	if ch == nil {
		return errors.New("unknown or expired session token")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ch.Close(); st.Close() })
	defer stop()
	select {
	case <-s.Release:
		// Opened after the release (a peer's route through this proxy
		// lingered): it runs until the proxy stops, then resumes
		// elsewhere like the others; ending it now would only fail the
		// session's dial.
	default:
		if s.Release != nil {
			go func() {
				select {
				case <-s.Release:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
	}
	res := streams.Pipe(st, ch)
	if s.Logger != nil {
		s.Logger.Debug("peer stream ended", "peer", peerID, "in", res.AtoB, "out", res.BtoA, "err", res.Err)
	}
	return nil
}
