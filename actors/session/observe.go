package session

import (
	"io"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/transport/streams"
)

// Observer is told what sessions do, for the proxy's metrics. Its methods
// are called from session goroutines and must not block. A path is
// PathLocal (the agent's tunnel is on this proxy) or PathPeer (it is on
// another proxy).
type Observer interface {
	// Decided is the access decision for a request: whether any agent
	// serving the resource is one the user's roles allow.
	Decided(allowed bool)
	// Dialed is one attempt at one candidate, and its outcome.
	Dialed(path string, err error)
	// FailedOver is a session moving on to its next candidate, whose path
	// is given, after an attempt failed.
	FailedOver(path string)
	// Started is a request's outcome: StartOK, StartDenied,
	// StartUnavailable or StartError. Ended follows StartOK, and the
	// StartError of a session whose start the audit log has (the user's
	// channel failed), as the log's session.end follows its session.start.
	Started(result string)
	// Connected is the path a started session runs on, how long it took
	// from the request, and its legs' round trips.
	Connected(path string, took time.Duration, legs Legs)
	// Resumed is a hop replaced after a failure, and how long the session
	// stalled.
	Resumed(stalled time.Duration)
	// Moved counts bytes as they flow: up from the user to the resource,
	// down from the resource to the user.
	Moved(up, down int64)
	// Ended is a started session's end: EndOK, EndError or EndRefused
	// (the node refused the login), and how long it ran.
	Ended(outcome string, ran time.Duration)
}

// The paths of Observer.
const (
	PathLocal = "local"
	PathPeer  = "peer"
)

// The results of Observer.Started.
const (
	StartOK          = "ok"
	StartDenied      = "denied"      // no agent of the resource is one the user may reach
	StartUnavailable = "unavailable" // unknown resource, no usable agent, or every dial failed
	StartError       = "error"       // the audit log or the user's channel failed
)

// The outcomes of Observer.Ended, as session.end records them.
const (
	EndOK      = "ok"
	EndError   = "error"
	EndRefused = "refused"
)

// Legs are the round trips of a session's path when it connected, each
// as last measured, and 0 where not measured or not part of the path:
// User from the user to this proxy (an SSH keepalive), Peer from this
// proxy to the peer holding the agent's tunnel (the prober), Agent from
// the proxy holding the tunnel to the agent (the tunnel's keepalive).
type Legs struct {
	User, Peer, Agent time.Duration
}

// pathKind names e's path for the Observer.
func pathKind(e router.Endpoint) string {
	if e.Local {
		return PathLocal
	}
	return PathPeer
}

// measureLegs is the round trips of the path to e as known now.
func (s *Session) measureLegs(e router.Endpoint) Legs {
	l := Legs{Agent: e.RTT}
	if s.cfg.UserRTT != nil {
		l.User = s.cfg.UserRTT()
	}
	if !e.Local && s.cfg.Load != nil {
		l.Peer = s.cfg.Load.PeerRTT(e.ProxyID)
	}
	return l
}

// nopObserver is the Observer of a session configured without one.
type nopObserver struct{}

func (nopObserver) Decided(bool)                          {}
func (nopObserver) Dialed(string, error)                  {}
func (nopObserver) FailedOver(string)                     {}
func (nopObserver) Started(string)                        {}
func (nopObserver) Connected(string, time.Duration, Legs) {}
func (nopObserver) Resumed(time.Duration)                 {}
func (nopObserver) Moved(int64, int64)                    {}
func (nopObserver) Ended(string, time.Duration)           {}

// counted is the agent's side of a session's pipe, telling obs of every
// byte as it goes: what is written to the agent went up, what is read
// from it came down. CloseWrite passes through, so half-close works.
type counted struct {
	streams.Stream
	obs Observer
}

func (c counted) Read(b []byte) (int, error) {
	n, err := c.Stream.Read(b)
	if n > 0 {
		c.obs.Moved(0, int64(n))
	}
	return n, err
}

func (c counted) Write(b []byte) (int, error) {
	n, err := c.Stream.Write(b)
	if n > 0 {
		c.obs.Moved(int64(n), 0)
	}
	return n, err
}

func (c counted) CloseWrite() error {
	if cw, ok := c.Stream.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Stream.Close()
}

var _ io.ReadWriteCloser = counted{}
