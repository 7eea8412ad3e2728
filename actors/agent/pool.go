package agent

import (
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
)

type (
	// resourcesChanged tells the pool and its connections that resource
	// statuses changed and should be heartbeated now.
	resourcesChanged struct{}
	// proxiesChanged tells the pool the proxy set changed.
	proxiesChanged struct{}
	// slotDone is sent by a connection actor whose slot is no longer
	// needed (a mesh bootstrap tunnel once the set is known).
	slotDone struct{ slot string }
)

// pool is the agent's pool actor: it keeps the configured tunnels, one
// connection actor (a child) per tunnel slot.
//
// Peering mode keeps ConnectionCount slots, each on a distinct proxy
// chosen from the proxy set (the directory); with fewer proxies than
// slots, the slots left over wait for one to join (the directory wakes
// them) rather than open a second tunnel to a proxy, which would
// supersede the first. Mesh mode keeps one slot per proxy in the set,
// plus a bootstrap slot that dials the configured addresses until the set
// is known; its tunnel serves as its proxy's until it ends.
type pool struct {
	a     *Agent
	conns map[string]*actor.PID
}

func newPoolProps(a *Agent) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &pool{a: a, conns: map[string]*actor.PID{}} })
}

// Receive dispatches messages.
func (p *pool) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.onStarted(ctx)
	case resourcesChanged:
		for _, c := range p.conns {
			ctx.Send(c, resourcesChanged{})
		}
	case proxiesChanged:
		if p.a.cfg.TunnelStrategy == StrategyMesh {
			p.reconcile(ctx)
		}
	case slotDone:
		if pid := p.conns[m.slot]; pid != nil {
			delete(p.conns, m.slot)
			ctx.Stop(pid)
		}
		if m.slot == slotBootstrap {
			// Its proxy, if still in the set, needs a mesh slot now.
			p.reconcile(ctx)
		}
	}
}

func (p *pool) onStarted(ctx actor.Context) {
	if p.a.cfg.TunnelStrategy == StrategyMesh {
		p.spawn(ctx, slotBootstrap, "")
		p.reconcile(ctx)
		return
	}
	for i := 0; i < p.a.cfg.ConnectionCount; i++ {
		p.spawn(ctx, "peer-"+strconv.Itoa(i), "")
	}
}

const (
	slotBootstrap = "bootstrap"
	meshPrefix    = "mesh:"
)

func (p *pool) spawn(ctx actor.Context, slot, proxyID string) {
	p.conns[slot] = ctx.Spawn(newConnProps(p.a, slot, proxyID))
}

// reconcile keeps one mesh slot per known proxy. The bootstrap slot's
// tunnel stands for its proxy's mesh slot until it ends: a mesh slot
// dialing that proxy meanwhile would supersede it.
func (p *pool) reconcile(ctx actor.Context) {
	boot := ""
	if p.conns[slotBootstrap] != nil {
		boot = p.a.dir.holding(slotBootstrap)
	}
	want := map[string]bool{}
	for _, px := range p.a.dir.known() {
		if px.ID == boot {
			want[slotBootstrap] = true
			continue
		}
		want[meshPrefix+px.ID] = true
		if p.conns[meshPrefix+px.ID] == nil {
			p.spawn(ctx, meshPrefix+px.ID, px.ID)
		}
	}
	for slot, pid := range p.conns {
		// The bootstrap slot ends by itself once the set is known, unless
		// it holds a proxy still in the set.
		if slot == slotBootstrap && (boot == "" || want[slot]) {
			continue
		}
		if !want[slot] {
			delete(p.conns, slot)
			ctx.Stop(pid)
		}
	}
}
