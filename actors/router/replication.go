package router

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/routes"
)

// MemberUp says membership sees a peer proxy alive; PeerAddr is where its
// router listens (protoactor remote).
type MemberUp struct {
	ID       string
	PeerAddr string
}

// MemberDown says a peer proxy is dead or has left: its routes go at once.
type MemberDown struct {
	ID     string
	Reason string
}

type beacon struct{}

// RouterName is the router's actor name on every proxy, so a peer's router
// is addressed as actor.NewPID(peerAddr, RouterName).
const RouterName = "router"

// replication is the router's share of route replication: the table of
// other proxies' routes, the peers, and this proxy's own (epoch, seq).
type replication struct {
	table   *routes.Table
	peers   map[string]*actor.PID // peer proxy id → its router
	seq     uint64
	touched map[string]bool // local agents changed since the last delta
}

func newReplication() replication {
	return replication{table: routes.New(), peers: map[string]*actor.PID{}, touched: map[string]bool{}}
}

func (rp *replication) touch(agentID string) { rp.touched[agentID] = true }

func (r *Router) localRoute(st *agentState) *clusterpb.AgentRoute {
	a := &clusterpb.AgentRoute{
		AgentId:           st.rec.ID,
		Hostname:          st.rec.Hostname,
		Version:           st.rec.Version,
		ConnectedUnixNano: st.rec.Connected.UnixNano(),
		LastSeenUnixNano:  st.rec.LastSeen.UnixNano(),
		Addr:              st.rec.Addr,
	}
	now := r.cfg.Clock()
	if st.tunnel != nil {
		a.Online, a.TunnelAddress, a.TunnelId = true, st.tunnel.Address, st.tunnel.Id
	}
	for _, res := range st.resources {
		a.Resources = append(a.Resources, &clusterpb.Resource{
			Name: res.Name, Kind: res.Kind, Labels: res.Labels,
			// An expired heartbeat is unhealthy for every proxy.
			Healthy: res.Healthy && res.Expires.After(now), Detail: res.Detail,
		})
	}
	return a
}

func (r *Router) localState() *clusterpb.RouteState {
	s := &clusterpb.RouteState{Origin: r.cfg.ProxyID, Epoch: r.cfg.Epoch, Seq: r.repl.seq}
	for _, st := range r.agents {
		s.Agents = append(s.Agents, r.localRoute(st))
	}
	return s
}

// sendDelta sends peers what changed locally since the last delta.
func (r *Router) sendDelta(ctx actor.Context) {
	if len(r.repl.touched) == 0 {
		return
	}
	r.repl.seq++
	d := &clusterpb.RouteDelta{Origin: r.cfg.ProxyID, Epoch: r.cfg.Epoch, Seq: r.repl.seq}
	for id := range r.repl.touched {
		if st := r.agents[id]; st != nil {
			d.Upserts = append(d.Upserts, r.localRoute(st))
		} else {
			d.Removals = append(d.Removals, id)
		}
	}
	clear(r.repl.touched)
	for _, pid := range r.repl.peers {
		ctx.Send(pid, d)
	}
}

// onBeacon tells peers the current version: an empty delta at the
// current seq, which a peer that missed a delta answers with a sync.
func (r *Router) onBeacon(ctx actor.Context) {
	if len(r.repl.peers) == 0 {
		return
	}
	d := &clusterpb.RouteDelta{Origin: r.cfg.ProxyID, Epoch: r.cfg.Epoch, Seq: r.repl.seq}
	for _, pid := range r.repl.peers {
		ctx.Send(pid, d)
	}
}

func (r *Router) onMemberUp(ctx actor.Context, m *MemberUp) {
	if m.ID == r.cfg.ProxyID {
		return
	}
	pid := actor.NewPID(m.PeerAddr, RouterName)
	r.repl.peers[m.ID] = pid
	if r.repl.table.MemberAlive(m.ID) {
		r.cfg.Logger.Info("peer up", "peer", m.ID, "addr", m.PeerAddr)
	}
	r.requestSync(ctx, m.ID)
}

func (r *Router) onMemberDown(ctx actor.Context, m *MemberDown) {
	delete(r.repl.peers, m.ID)
	if r.repl.table.MemberGone(m.ID) {
		r.changed(ctx)
	}
	r.cfg.Logger.Info("peer down; its routes are dropped", "peer", m.ID, "reason", m.Reason)
}

func (r *Router) requestSync(ctx actor.Context, origin string) {
	pid := r.repl.peers[origin]
	if pid == nil {
		return
	}
	// The answer, a *clusterpb.RouteState, arrives as a message.
	ctx.RequestWithCustomSender(pid, &clusterpb.SyncRequest{Requester: r.cfg.ProxyID}, ctx.Self())
}

func (r *Router) onRouteDelta(ctx actor.Context, d *clusterpb.RouteDelta) {
	switch r.repl.table.ApplyDelta(d) {
	case routes.Applied:
		if len(d.Upserts)+len(d.Removals) > 0 {
			r.changed(ctx)
		}
	case routes.NeedSync:
		r.requestSync(ctx, d.Origin)
	}
}

func (r *Router) onRouteState(ctx actor.Context, s *clusterpb.RouteState) {
	if r.repl.table.ApplyState(s) == routes.Applied {
		r.changed(ctx)
	}
}
