package forward

import (
	"maps"
	"sync"
	"time"
)

// Load is what this proxy knows of the agents and peers it forwards to,
// for ordering a session's candidates: live sessions per agent, agents
// whose dials failed lately, and the measured round trip to each peer
// proxy. It implements the session's Load; safe for concurrent use.
type Load struct {
	mu      sync.Mutex // guards the fields below
	live    map[string]int
	failed  map[string]time.Time
	peerRTT map[string]time.Duration
}

// NewLoad returns an empty Load.
func NewLoad() *Load {
	return &Load{live: map[string]int{}, failed: map[string]time.Time{}, peerRTT: map[string]time.Duration{}}
}

// FailMemory is how long an agent whose dial failed is tried last.
const FailMemory = 10 * time.Second

// Sessions is the number of live sessions to agentID.
func (l *Load) Sessions(agentID string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[agentID]
}

// Add changes the live sessions to agentID by delta.
func (l *Load) Add(agentID string, delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live[agentID] += delta; l.live[agentID] <= 0 {
		delete(l.live, agentID)
	}
}

// Failed remembers that a dial to agentID failed just now.
func (l *Load) Failed(agentID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed[agentID] = time.Now()
}

// Succeeded forgets agentID's failure.
func (l *Load) Succeeded(agentID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failed, agentID)
}

// RecentlyFailed reports whether a dial to agentID failed in the last
// FailMemory.
func (l *Load) RecentlyFailed(agentID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.failed[agentID]
	if ok && time.Since(t) > FailMemory {
		delete(l.failed, agentID)
		return false
	}
	return ok
}

// PeerRTT is the last measured round trip to a peer proxy (0 if never).
func (l *Load) PeerRTT(proxyID string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peerRTT[proxyID]
}

// SetPeerRTT records a measured round trip to a peer proxy.
func (l *Load) SetPeerRTT(proxyID string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.peerRTT[proxyID] = d
}

// ForgetPeer drops what is known of a peer that left.
func (l *Load) ForgetPeer(proxyID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.peerRTT, proxyID)
}

// Live returns the live sessions per agent.
func (l *Load) Live() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.live)
}
