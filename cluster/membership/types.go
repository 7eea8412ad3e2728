package membership

import (
	"errors"
	"strconv"
)

// State is a member's state as gossip sees it.
type State int

// The states, in memberlist's order.
const (
	Alive State = iota
	Suspect
	Dead // declared dead by failure detection
	Left // left gracefully (Leave)
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Member is one proxy as this proxy sees it.
type Member struct {
	Meta
	// GossipAddr is the member's advertised gossip address (ip:port).
	GossipAddr string
	State      State
	// Incarnation is memberlist's incarnation number as of the member's
	// last event: it grows when the member refutes a suspicion or
	// re-advertises, but a refutation alone raises no event.
	Incarnation uint32
}

// EventType says what happened to a member.
type EventType int

// The event types.
const (
	EventJoin   EventType = iota // first seen, or alive again after a leave
	EventUpdate                  // its Meta changed
	EventLeave                   // declared dead, or left gracefully
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	}
	return "event(" + strconv.Itoa(int(t)) + ")"
}

// Leave reasons.
const (
	ReasonDead = "dead"
	ReasonLeft = "left"
)

// Event is one change of the membership. A member may leave and join again
// under the same ProxyID (after a pause, a partition, or a restart).
type Event struct {
	Type   EventType
	Member Member
	// Reason is set on EventLeave: ReasonDead or ReasonLeft.
	Reason string
}

// Errors callers may branch on.
var (
	ErrClosed     = errors.New("membership closed")
	ErrNotStarted = errors.New("membership not started")
	ErrStarted    = errors.New("membership already started")
	ErrLeft       = errors.New("membership left the cluster")
	// ErrKeyMismatch marks a join refused because the two proxies do not
	// share the gossip encryption key (or one of them has none).
	ErrKeyMismatch = errors.New("gossip encryption keys differ")
)
