package agent

import (
	"github.com/asynkron/protoactor-go/actor"
)

// resourcesChanged tells the pool and its connections that the resource
// statuses changed and should be heartbeated now.
type resourcesChanged struct{}

// pool is the agent's pool actor: it keeps the configured tunnels, one
// connection actor (a child) per tunnel.
type pool struct {
	a     *Agent
	conns []*actor.PID
}

func newPoolProps(a *Agent) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &pool{a: a} })
}

// Receive dispatches messages.
func (p *pool) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		p.onStarted(ctx)
	case resourcesChanged:
		for _, c := range p.conns {
			ctx.Send(c, resourcesChanged{})
		}
	}
}

// onStarted starts one connection; it walks the proxy list until one
// answers. (Peering mode with connection_count and mesh mode come with
// the proxy cluster.)
func (p *pool) onStarted(ctx actor.Context) {
	p.conns = append(p.conns, ctx.Spawn(newConnProps(p.a, p.a.cfg.Proxies, 0)))
}
