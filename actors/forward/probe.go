package forward

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/membership"
)

// Prober measures the round trip to every member's router over the peer
// link and keeps the last answer of each: the nearest strategy orders
// candidates by it (through Load), and status shows it. One probe serves
// both.
type Prober struct {
	System *actor.ActorSystem
	// Members lists the cluster's members, this proxy (Self) included.
	Members func() []membership.Member
	Self    string
	// Router addresses a member's router by its peer address.
	Router func(peerAddr string) *actor.PID
	// Load, if set, receives every peer's measured round trip.
	Load *Load
	// Interval between rounds, and Timeout of one probe.
	Interval, Timeout time.Duration

	mu   sync.Mutex // guards last
	last map[string]Probe
}

// Probe is one member's answer: its router's counts and the round trip,
// or why it did not answer.
type Probe struct {
	At     time.Time
	RTT    time.Duration
	Status *clusterpb.ProxyStatus
	Err    error
}

// Run probes every member each Interval until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, m := range p.Members() {
			if m.ProxyID == p.Self || m.State != membership.Alive {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.ProbeNow(m)
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeNow asks m's router for its counts, records and returns the answer.
func (p *Prober) ProbeNow(m membership.Member) Probe {
	start := time.Now()
	res, err := p.System.Root.RequestFuture(p.Router(m.PeerAddr), &clusterpb.StatusRequest{}, p.Timeout).Result()
	pr := Probe{At: start, RTT: time.Since(start)}
	st, ok := res.(*clusterpb.ProxyStatus)
	switch {
	case err != nil:
		pr.Err = err
	case !ok:
		pr.Err = fmt.Errorf("unexpected answer %T", res)
	default:
		pr.Status = st
	}
	p.mu.Lock()
	if p.last == nil {
		p.last = map[string]Probe{}
	}
	p.last[m.ProxyID] = pr
	p.mu.Unlock()
	if pr.Err == nil && m.ProxyID != p.Self && p.Load != nil {
		p.Load.SetPeerRTT(m.ProxyID, pr.RTT)
	}
	return pr
}

// Recent returns m's last probe if it is younger than two intervals, else
// probes it now.
func (p *Prober) Recent(m membership.Member) Probe {
	p.mu.Lock()
	pr, ok := p.last[m.ProxyID]
	p.mu.Unlock()
	if ok && pr.Err == nil && time.Since(pr.At) < 2*p.Interval {
		return pr
	}
	return p.ProbeNow(m)
}

// Last returns every member's last probe, by proxy id, without probing.
func (p *Prober) Last() map[string]Probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Probe, len(p.last))
	for id, pr := range p.last {
		out[id] = pr
	}
	return out
}

// Forget drops what is known of a member that left.
func (p *Prober) Forget(id string) {
	p.mu.Lock()
	delete(p.last, id)
	p.mu.Unlock()
	if p.Load != nil {
		p.Load.ForgetPeer(id)
	}
}
