package router

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/routes"
)

// MemberUp says membership sees a peer proxy alive; PeerAddr is where its
// router listens (protoactor remote).
type MemberUp struct {
	ID       string
	PeerAddr string
	Region   string
}

// MemberDown says a peer proxy is dead or has left: its routes go at once.
type MemberDown struct {
	ID     string
	Reason string
}

// PeerUnreachable says the peer link to a proxy broke (protoactor remote
// lost its connection). Routes through that proxy are not offered to new
// sessions until a message from it arrives again or membership says more.
type PeerUnreachable struct{ Addr string }

// PeersKnown says every peer alive when the proxy started has been sent as
// a MemberUp: from now on the router can tell when it has synced with them
// all (Snapshot.Synced).
type PeersKnown struct{}

type beacon struct{}

// RouterName is the router's actor name on every proxy, so a peer's router
// is addressed as actor.NewPID(peerAddr, RouterName).
const RouterName = "router"

// link is a router's outbox to one peer router. Sending to a remote PID
// can block while protoactor remote (re)connects to a peer that is down;
// each peer gets its own link actor so a dead peer never delays the
// router or the other peers.
type link struct{ peer *actor.PID }

// forward carries a message for the peer with the sender to answer to.
type forward struct {
	msg    any
	sender *actor.PID
}

func (l *link) Receive(ctx actor.Context) {
	if f, ok := ctx.Message().(forward); ok {
		if f.sender != nil {
			ctx.RequestWithCustomSender(l.peer, f.msg, f.sender)
		} else {
			ctx.Send(l.peer, f.msg)
		}
	}
}

// peerState is one peer as the router knows it.
type peerState struct {
	router *actor.PID // the peer's router
	link   *actor.PID // our outbox to it
	region string
}

// replication is the router's share of route replication: the table of
// other proxies' routes, the peers, and this proxy's own (epoch, seq).
type replication struct {
	table   *routes.Table
	peers   map[string]peerState // by peer proxy id
	seq     uint64
	touched map[string]bool // local agents changed since the last delta
	suspect map[string]bool // peers whose link broke, by proxy id

	// The first sync: a proxy is ready once it has every peer's routes
	// and configuration, or has waited syncGrace for a peer that does not
	// answer. It is a latch: later peers do not make it unready.
	ready      bool
	peersKnown bool                 // membership has told of the peers alive at start
	seen       map[string]time.Time // when each peer was first seen
	gotRoutes  map[string]bool
	gotConfig  map[string]bool
}

// syncGrace is how long a starting proxy waits for one peer's routes and
// configuration before it serves without them.
const syncGrace = 10 * time.Second

func newReplication() replication {
	return replication{
		table: routes.New(), peers: map[string]peerState{}, touched: map[string]bool{}, suspect: map[string]bool{},
		seen: map[string]time.Time{}, gotRoutes: map[string]bool{}, gotConfig: map[string]bool{},
	}
}

func (rp *replication) configFrom(origin string) { rp.gotConfig[origin] = true }

// synced reports (and latches) whether the first sync is done.
func (rp *replication) synced(now time.Time) bool {
	if rp.ready {
		return true
	}
	if !rp.peersKnown {
		return false
	}
	for id := range rp.peers {
		if !(rp.gotRoutes[id] && rp.gotConfig[id]) && now.Sub(rp.seen[id]) < syncGrace {
			return false
		}
	}
	rp.ready = true
	rp.seen, rp.gotRoutes, rp.gotConfig = nil, nil, nil
	return true
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
		RttMicros:         st.rtt.Microseconds(),
		HostKey:           st.rec.HostKey,
	}
	now := r.cfg.Clock()
	if st.tunnel != nil {
		a.Online, a.TunnelAddress, a.TunnelId = true, st.tunnel.Address, st.tunnel.Id
	}
	for _, res := range st.resources {
		a.Resources = append(a.Resources, &clusterpb.Resource{
			Name: res.Name, Kind: res.Kind, Labels: res.Labels, Port: int32(res.Port),
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
	for _, p := range r.repl.peers {
		ctx.Send(p.link, forward{msg: d})
	}
}

// onBeacon tells peers the current version: an empty delta at the
// current seq, which a peer that missed a delta answers with a sync.
func (r *Router) onBeacon(ctx actor.Context) {
	if len(r.repl.peers) == 0 {
		return
	}
	d := &clusterpb.RouteDelta{Origin: r.cfg.ProxyID, Epoch: r.cfg.Epoch, Seq: r.repl.seq, Beacon: true}
	for _, p := range r.repl.peers {
		ctx.Send(p.link, forward{msg: d})
	}
}

func (r *Router) onMemberUp(ctx actor.Context, m *MemberUp) {
	if m.ID == r.cfg.ProxyID {
		return
	}
	pid := r.cfg.PeerRouter(m.PeerAddr)
	if old, ok := r.repl.peers[m.ID]; !ok || !old.router.Equal(pid) {
		if ok {
			ctx.Stop(old.link)
		}
		l := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return &link{peer: pid} }))
		r.repl.peers[m.ID] = peerState{router: pid, link: l}
	}
	if !r.repl.ready {
		if _, ok := r.repl.seen[m.ID]; !ok {
			r.repl.seen[m.ID] = r.cfg.Clock()
		}
	}
	if p := r.repl.peers[m.ID]; p.region != m.Region {
		p.region = m.Region
		r.repl.peers[m.ID] = p
	}
	if r.repl.table.MemberAlive(m.ID) {
		r.cfg.Logger.Info("peer up", "peer", m.ID, "addr", m.PeerAddr)
		r.sendFullConfig(ctx, r.repl.peers[m.ID])
	}
	r.requestSync(ctx, m.ID)
}

func (r *Router) onMemberDown(ctx actor.Context, m *MemberDown) {
	if p, ok := r.repl.peers[m.ID]; ok {
		ctx.Stop(p.link)
		delete(r.repl.peers, m.ID)
	}
	delete(r.repl.suspect, m.ID)
	if r.repl.table.MemberGone(m.ID) {
		r.changed(ctx)
	}
	r.cfg.Logger.Info("peer down; its routes are dropped", "peer", m.ID, "reason", m.Reason)
}

func (r *Router) requestSync(ctx actor.Context, origin string) {
	p, ok := r.repl.peers[origin]
	if !ok {
		return
	}
	// The answer, a *clusterpb.RouteState, arrives as a message.
	ctx.Send(p.link, forward{msg: &clusterpb.SyncRequest{Requester: r.cfg.ProxyID}, sender: ctx.Self()})
}

func (r *Router) onPeerUnreachable(ctx actor.Context, m *PeerUnreachable) {
	for id, p := range r.repl.peers {
		if p.router.Address == m.Addr && !r.repl.suspect[id] {
			r.repl.suspect[id] = true
			r.cfg.Logger.Warn("peer link lost; its routes are held back", "peer", id, "addr", m.Addr)
			r.changed(ctx)
		}
	}
}

// heardFrom clears suspicion of a peer that is talking again.
func (r *Router) heardFrom(ctx actor.Context, origin string) {
	if r.repl.suspect[origin] {
		delete(r.repl.suspect, origin)
		r.changed(ctx)
	}
}

func (r *Router) onRouteDelta(ctx actor.Context, d *clusterpb.RouteDelta) {
	r.heardFrom(ctx, d.Origin)
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
	r.heardFrom(ctx, s.Origin)
	if !r.repl.ready {
		r.repl.gotRoutes[s.Origin] = true
		r.changed(ctx)
	}
	if r.repl.table.ApplyState(s) == routes.Applied {
		r.changed(ctx)
	}
}

// status answers a StatusRequest: this proxy's own counts.
func (r *Router) status() *clusterpb.ProxyStatus {
	st := &clusterpb.ProxyStatus{Id: r.cfg.ProxyID, HostKey: r.cfg.HostKey, UserAddr: r.cfg.UserAddr}
	for _, a := range r.agents {
		if a.tunnel != nil {
			st.LocalAgents++
		}
	}
	st.Routes = int32(len(r.cfg.Table.Snapshot().Routes))
	return st
}
