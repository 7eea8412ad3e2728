// Package router holds the router actor: one per proxy, the owner of the
// route table (agent → tunnel actor) and of the resource catalog built from
// agents' heartbeats.
//
// The router applies TunnelUp, Heartbeat and TunnelDown messages from
// tunnel actors, persists what it learns in the catalog store, and
// publishes immutable snapshots through a Table that sessions read without
// a round trip. On start it loads the last persisted catalog; those entries
// are offline (stale) until their agents' tunnels come back.
//
// Invariants: a message from a tunnel actor that is no longer the agent's
// current tunnel is ignored, so a late TunnelDown or heartbeat from a
// replaced tunnel never takes down or resurrects a route.
package router

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/catalog"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Config configures the router.
type Config struct {
	ProxyID string
	// Region is this proxy's region.
	Region string
	// Store persists the catalog; nil keeps it in memory only.
	Store *catalog.Store
	// Table receives the snapshots.
	Table *Table
	// HeartbeatTTL is how long a resource stays online without a
	// heartbeat while its tunnel is up, and OfflineRetention how long an
	// offline resource stays listed: required (the proxy's
	// tunnel.heartbeat_ttl and tunnel.offline_retention).
	HeartbeatTTL     time.Duration
	OfflineRetention time.Duration
	// SweepInterval is how often TTLs are checked and state persisted.
	// Default 1s.
	SweepInterval time.Duration
	// Epoch numbers this run of the proxy for route replication; it must
	// grow across restarts (the start time in nanoseconds does). Default:
	// the clock at NewProps.
	Epoch uint64
	// OnDefinitions, if set, is called (from the router's goroutine) with
	// the dynamic resource definitions whenever the configuration changes.
	OnDefinitions func([]model.Definition)
	// HostKey and UserAddr are this proxy's plain SSH host key and user
	// address, told to peers in status answers (`warren known-hosts`).
	HostKey, UserAddr string
	// Reserved, if set, names that no agent may claim through an
	// unscoped grant (the proxies' own ids and host names, "localhost", IP
	// addresses): a name a user could take for a proxy's.
	Reserved func(name string) bool
	// OnPolicy, if set, is called (from the router's goroutine) with the
	// access policy whenever the configuration changes: locks to enforce,
	// roles to push to agents.
	OnPolicy func(*access.Policy)
	// BeaconInterval is how often the router tells peers its route version
	// so a lost delta is noticed without waiting for the next change.
	// Default 1s.
	BeaconInterval time.Duration
	// PeerRouter addresses the router of the peer whose peer address is
	// addr. Default: actor.NewPID(addr, RouterName), over protoactor
	// remote; tests route it to routers in one actor system.
	PeerRouter func(addr string) *actor.PID
	Clock      func() time.Time
	Logger     *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.ProxyID == "" {
		errs = append(errs, errors.New("ProxyID is required"))
	}
	if c.Table == nil {
		errs = append(errs, errors.New("Table is required"))
	}
	if c.HeartbeatTTL <= 0 || c.OfflineRetention <= 0 {
		errs = append(errs, errors.New("HeartbeatTTL and OfflineRetention are required"))
	}
	if c.SweepInterval < 0 || c.BeaconInterval < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("router config: %w", err)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Epoch == 0 {
		c.Epoch = uint64(c.Clock().UnixNano())
	}
	if c.BeaconInterval == 0 {
		c.BeaconInterval = time.Second
	}
	if c.PeerRouter == nil {
		c.PeerRouter = func(addr string) *actor.PID { return actor.NewPID(addr, RouterName) }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// TunnelUp says a tunnel actor now reaches an agent.
type TunnelUp struct {
	Agent  model.Agent
	Tunnel *actor.PID
}

// Heartbeat carries an agent's resources, through its tunnel actor. Only
// the resources Grant allows are applied; the others are refused, and the
// verdict goes to Reply (if set) once the heartbeat is applied.
type Heartbeat struct {
	AgentID   string
	Tunnel    *actor.PID
	Grant     access.Grant
	Resources []revtunnel.ResourceStatus
	Reply     chan<- HeartbeatVerdict
}

// HeartbeatVerdict answers a Heartbeat: the resources refused, and why.
type HeartbeatVerdict struct {
	Refused []Refusal
}

// TunnelDown says a tunnel actor no longer reaches its agent.
type TunnelDown struct {
	AgentID string
	Tunnel  *actor.PID
	Reason  string
}

// TunnelRTT is a tunnel's measured keepalive round trip to its agent.
type TunnelRTT struct {
	AgentID string
	Tunnel  *actor.PID
	RTT     time.Duration
}

// Sync is answered (with true) once every message sent to the router
// before it has been applied; Start uses it to serve the persisted view at
// once.
type Sync struct{}

// Superseded is sent to a tunnel actor whose agent connected again through
// another tunnel on this proxy; the old tunnel should close.
type Superseded struct{ By *actor.PID }

type (
	sweep   struct{}
	publish struct{}
)

type agentState struct {
	rec       model.Agent
	tunnel    *actor.PID // nil when offline
	resources map[string]*model.Resource
	rtt       time.Duration // last published keepalive round trip
}

// Router is the router actor.
type Router struct {
	cfg     Config
	agents  map[string]*agentState // local agents, by id
	version uint64
	pending bool            // a publish message is queued or timed
	dirty   map[string]bool // local agents to persist
	stop    chan struct{}
	// lastPublish is when the last publish began and publishCost how long
	// it took (real time, not Config.Clock): they space publishes out.
	lastPublish time.Time
	publishCost time.Duration
	// rttChanged holds local agents whose keepalive round trip changed
	// enough to be replicated, which happens every rttInterval; rttSent is
	// when it last did (Config.Clock).
	rttChanged map[string]bool
	rttSent    time.Time

	repl        replication
	cfgState    configState
	defsChanged bool // definitions changed since the last publish
}

// NewProps returns the router's props. The config must be valid.
func NewProps(cfg Config) (*actor.Props, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &Router{cfg: cfg, agents: map[string]*agentState{}, dirty: map[string]bool{}, rttChanged: map[string]bool{}, repl: newReplication()}
	}), nil
}

// Receive dispatches messages.
func (r *Router) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.onStarted(ctx)
	case *TunnelUp:
		if m.Tunnel == nil || m.Agent.ID == "" {
			r.cfg.Logger.Error("router: dropped TunnelUp without tunnel or agent id", "agent", m.Agent.ID)
			return
		}
		r.onTunnelUp(ctx, m)
	case *Heartbeat:
		v := HeartbeatVerdict{}
		if m.Tunnel != nil {
			v = r.onHeartbeat(ctx, m)
		}
		if m.Reply != nil {
			m.Reply <- v
		}
	case *TunnelDown:
		if m.Tunnel != nil {
			r.onTunnelDown(ctx, m)
		}
	case *TunnelRTT:
		r.onTunnelRTT(ctx, m)
	case sweep:
		r.onSweep(ctx)
	case publish:
		if r.pending { // else a Sync has flushed already
			r.flush(ctx)
		}
	case *Sync:
		if r.pending {
			r.flush(ctx)
		}
		ctx.Respond(true)
	case *MemberUp:
		r.onMemberUp(ctx, m)
	case *PeersKnown:
		r.repl.peersKnown = true
		r.changed(ctx)
	case *MemberDown:
		r.onMemberDown(ctx, m)
	case *clusterpb.RouteDelta:
		r.onRouteDelta(ctx, m)
	case *clusterpb.RouteState:
		r.onRouteState(ctx, m)
	case *clusterpb.SyncRequest:
		ctx.Respond(r.localState())
	case *clusterpb.StatusRequest:
		ctx.Respond(r.status())
	case *PutDefinition:
		r.onPutDefinition(ctx, m)
	case *PutConfig:
		r.onPutConfig(ctx, m)
	case *ClaimNames:
		r.onClaimNames(ctx, m)
	case *clusterpb.TokenRedeem:
		r.onTokenRedeem(ctx, m)
	case *clusterpb.ConfigUpdate:
		r.onConfigUpdate(ctx, m)
	case beacon:
		r.onBeacon(ctx)
		r.antiEntropy(ctx)
	case *PeerUnreachable:
		r.onPeerUnreachable(ctx, m)
	case *actor.Restarting:
		close(r.stop) // the new incarnation starts its own sweeper
		r.persist()
	case *actor.Stopping:
		close(r.stop)
		r.persist()
	}
}

func (r *Router) onStarted(ctx actor.Context) {
	r.stop = make(chan struct{})
	r.loadConfig()
	r.defsChanged = true
	if r.cfg.Store != nil {
		agents, resources, err := r.cfg.Store.Load()
		if err != nil {
			r.cfg.Logger.Error("load catalog; starting empty", "err", err)
		}
		for _, a := range agents {
			r.agents[a.ID] = &agentState{rec: a, resources: map[string]*model.Resource{}}
		}
		for i := range resources {
			res := resources[i]
			st := r.agents[res.AgentID]
			if st == nil {
				st = &agentState{rec: model.Agent{ID: res.AgentID, ProxyID: res.ProxyID, LastSeen: res.LastSeen}, resources: map[string]*model.Resource{}}
				r.agents[res.AgentID] = st
			}
			st.resources[res.Name] = &res
		}
		r.cfg.Logger.Info("catalog loaded; entries are offline until their agents return", "agents", len(agents), "resources", len(resources))
	}
	r.publish()
	self, system, stop := ctx.Self(), ctx.ActorSystem(), r.stop
	sweepT, beaconT := time.NewTicker(r.cfg.SweepInterval), time.NewTicker(r.cfg.BeaconInterval)
	go func() {
		defer sweepT.Stop()
		defer beaconT.Stop()
		for {
			select {
			case <-sweepT.C:
				system.Root.Send(self, sweep{})
			case <-beaconT.C:
				system.Root.Send(self, beacon{})
			case <-stop:
				return
			}
		}
	}()
}

func (r *Router) onTunnelUp(ctx actor.Context, m *TunnelUp) {
	st := r.agents[m.Agent.ID]
	if st == nil {
		st = &agentState{resources: map[string]*model.Resource{}}
		r.agents[m.Agent.ID] = st
	}
	if st.tunnel != nil && !st.tunnel.Equal(m.Tunnel) {
		ctx.Send(st.tunnel, &Superseded{By: m.Tunnel})
	}
	st.rec = m.Agent
	st.rec.ProxyID = r.cfg.ProxyID
	st.tunnel = m.Tunnel
	r.dirty[m.Agent.ID] = true
	r.repl.touch(m.Agent.ID)
	r.changed(ctx)
	r.cfg.Logger.Info("route up", "agent", m.Agent.ID, "tunnel", m.Tunnel.Id)
}

func (r *Router) onHeartbeat(ctx actor.Context, m *Heartbeat) HeartbeatVerdict {
	var v HeartbeatVerdict
	st := r.agents[m.AgentID]
	if st == nil || st.tunnel == nil || !st.tunnel.Equal(m.Tunnel) {
		return v // from a tunnel that is not current: never resurrect
	}
	now := r.cfg.Clock()
	st.rec.LastSeen = now
	changed := false
	seen := make(map[string]bool, len(m.Resources))
	for _, rs := range m.Resources {
		labels := stampLabels(rs.Labels, m.Grant.Labels)
		if err := r.takeName(ctx, m.AgentID, m.Grant, rs.Name, rs.Labels); err != nil {
			v.Refused = append(v.Refused, Refusal{Name: rs.Name, Reason: err.Error()})
			continue
		}
		seen[rs.Name] = true
		cur := st.resources[rs.Name]
		next := &model.Resource{
			Name: rs.Name, AgentID: m.AgentID, Kind: rs.Kind, Labels: labels, Port: rs.Port,
			Healthy: rs.Healthy, Detail: rs.Detail, ProxyID: r.cfg.ProxyID,
			LastSeen: now, Expires: now.Add(r.cfg.HeartbeatTTL),
		}
		if cur == nil || !sameResource(cur, next) || cur.Expires.Before(now) {
			changed = true
		}
		st.resources[rs.Name] = next
	}
	for name := range st.resources {
		if !seen[name] {
			delete(st.resources, name)
			changed = true
			if r.cfg.Store != nil {
				if err := r.cfg.Store.DeleteResources(m.AgentID, name); err != nil {
					r.cfg.Logger.Error("delete withdrawn resource", "agent", m.AgentID, "resource", name, "err", err)
				}
			}
		}
	}
	r.dirty[m.AgentID] = true
	if changed {
		r.repl.touch(m.AgentID)
		r.changed(ctx)
	}
	return v
}

// stampLabels returns labels with the grant's labels added: a resource
// served under a grant with labels always carries them, so roles that
// select by them can rely on them. (A contradicting value is refused by
// the grant check before this.)
func stampLabels(labels, grant map[string]string) map[string]string {
	if len(grant) == 0 {
		return labels
	}
	out := make(map[string]string, len(labels)+len(grant))
	for k, v := range labels {
		out[k] = v
	}
	for k, v := range grant {
		out[k] = v
	}
	return out
}

func sameResource(a, b *model.Resource) bool {
	if a.Kind != b.Kind || a.Port != b.Port || a.Healthy != b.Healthy || a.Detail != b.Detail || len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if b.Labels[k] != v {
			return false
		}
	}
	return true
}

// rttInterval is how often changed round trips are replicated to peers
// (the first one of a tunnel goes at once). On a busy host round trips
// jitter by more than a quarter all the time, and every delta costs each
// peer a snapshot of O(routes).
const rttInterval = 5 * time.Second

// onTunnelRTT records a tunnel's round trip. Only a change of more than a
// quarter (and 200 µs) is published and replicated, so keepalives do not
// churn snapshots. The first measurement is published at once; later
// changes reach this proxy's snapshot with its next publish and peers
// every rttInterval (see onSweep).
func (r *Router) onTunnelRTT(ctx actor.Context, m *TunnelRTT) {
	st := r.agents[m.AgentID]
	if st == nil || st.tunnel == nil || !st.tunnel.Equal(m.Tunnel) {
		return
	}
	d := m.RTT - st.rtt
	if d < 0 {
		d = -d
	}
	if st.rtt != 0 && (d < st.rtt/4 || d < 200*time.Microsecond) {
		return
	}
	first := st.rtt == 0
	st.rtt = m.RTT
	if first {
		r.repl.touch(m.AgentID)
		r.changed(ctx)
	} else {
		r.rttChanged[m.AgentID] = true
	}
}

func (r *Router) onTunnelDown(ctx actor.Context, m *TunnelDown) {
	st := r.agents[m.AgentID]
	if st == nil || st.tunnel == nil || !st.tunnel.Equal(m.Tunnel) {
		return
	}
	st.tunnel = nil
	st.rec.LastSeen = r.cfg.Clock()
	r.dirty[m.AgentID] = true
	r.repl.touch(m.AgentID)
	r.changed(ctx)
	r.cfg.Logger.Info("route down", "agent", m.AgentID, "reason", m.Reason)
}

// onSweep expires stale heartbeats, prunes long-offline entries and
// persists what changed.
func (r *Router) onSweep(ctx actor.Context) {
	now := r.cfg.Clock()
	republish := false
	for id, st := range r.agents {
		if st.tunnel == nil && now.Sub(st.rec.LastSeen) > r.cfg.OfflineRetention {
			delete(r.agents, id)
			delete(r.dirty, id)
			r.repl.touch(id)
			republish = true
			if r.cfg.Store != nil {
				if err := r.cfg.Store.DeleteAgent(id); err != nil {
					r.cfg.Logger.Error("prune agent", "agent", id, "err", err)
				}
			}
		}
	}
	// An endpoint published as online whose heartbeat has since expired
	// needs a new snapshot. Peers need the news only if no heartbeat came
	// since (they were told the resource was healthy until then).
	for _, eps := range r.cfg.Table.Snapshot().Resources {
		for _, e := range eps {
			if e.Local && e.Online && !e.Expires.After(now) {
				republish = true
				if st := r.agents[e.AgentID]; st == nil || st.resources[e.Name] == nil || !st.resources[e.Name].Expires.After(now) {
					r.repl.touch(e.AgentID)
				}
			}
		}
	}
	if !r.repl.ready {
		republish = true // the first sync may have finished waiting
	}
	if len(r.rttChanged) > 0 && now.Sub(r.rttSent) >= rttInterval {
		for id := range r.rttChanged {
			r.repl.touch(id)
		}
		clear(r.rttChanged)
		r.rttSent = now
		republish = true
	}
	if republish {
		r.changed(ctx)
	}
	r.persist()
}

// A snapshot costs O(routes) (about 10 ms for 10,000 on one core);
// without a bound, a stream of changes (thousands of tunnels connecting,
// every peer's deltas) keeps the router rebuilding snapshots back to back.
// So a publish that took d is followed by the next no sooner than
// publishSpacing×d after it began, but never more than maxPublishWait
// later (d is wall time, which a busy host inflates). A small table still
// publishes at once.
const (
	publishSpacing = 5
	maxPublishWait = 100 * time.Millisecond
)

// changed schedules one publish after the messages already queued, so a
// burst of updates costs one snapshot, and no sooner than publishSpacing
// allows.
func (r *Router) changed(ctx actor.Context) {
	if r.pending {
		return
	}
	r.pending = true
	wait := time.Until(r.lastPublish.Add(min(publishSpacing*r.publishCost, maxPublishWait)))
	if wait <= 0 {
		ctx.Send(ctx.Self(), publish{})
		return
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	time.AfterFunc(wait, func() { system.Root.Send(self, publish{}) })
}

// persist writes what changed since the last call, as one batch (one
// fsync): agents and their resources. It runs before every publish, so a
// route any proxy can see is on disk here, and on every sweep for the
// heartbeats' last-seen times.
func (r *Router) persist() {
	if r.cfg.Store == nil || len(r.dirty) == 0 {
		return
	}
	var agents []model.Agent
	var res []model.Resource
	for id := range r.dirty {
		st := r.agents[id]
		if st == nil {
			continue
		}
		agents = append(agents, st.rec)
		for _, x := range st.resources {
			res = append(res, *x)
		}
	}
	if len(agents) > 0 {
		if err := r.cfg.Store.PutAgents(agents...); err != nil {
			r.cfg.Logger.Error("persist agents", "count", len(agents), "err", err)
		}
	}
	if len(res) > 0 {
		if err := r.cfg.Store.PutResources(res...); err != nil {
			r.cfg.Logger.Error("persist resources", "count", len(res), "err", err)
		}
	}
	clear(r.dirty)
}

// flush publishes a snapshot and sends peers the delta of what changed.
func (r *Router) flush(ctx actor.Context) {
	r.pending = false
	r.persist()
	start := time.Now()
	r.publish()
	r.lastPublish, r.publishCost = start, time.Since(start)
	r.sendDelta(ctx)
}

func (r *Router) publish() {
	now := r.cfg.Clock()
	r.version++
	prev := r.cfg.Table.Snapshot()
	s := &Snapshot{
		Version:   r.version,
		ProxyID:   r.cfg.ProxyID,
		Resources: make(map[string][]Endpoint, len(prev.Resources)),
		Agents:    make(map[string]AgentRoute, len(r.agents)),
		Routes:    make([]AgentRoute, 0, len(prev.Routes)),
	}
	for id, st := range r.agents {
		ar := AgentRoute{Agent: st.rec, Online: st.tunnel != nil, Tunnel: st.tunnel, Local: true}
		s.Agents[id] = ar
		s.Routes = append(s.Routes, ar)
		for _, res := range st.resources {
			e := Endpoint{Resource: *res, Local: true, Connected: st.rec.Connected, Region: r.cfg.Region, RTT: st.rtt}
			if st.tunnel != nil && res.Expires.After(now) {
				e.Online, e.Tunnel = true, st.tunnel
			}
			s.Resources[res.Name] = append(s.Resources[res.Name], e)
		}
	}
	r.repl.table.Agents(func(origin string, a *clusterpb.AgentRoute) {
		var pid *actor.PID
		if a.Online && a.TunnelAddress != "" && !r.repl.suspect[origin] {
			pid = actor.NewPID(a.TunnelAddress, a.TunnelId)
		}
		rec := model.Agent{
			ID: a.AgentId, Hostname: a.Hostname, Version: a.Version, ProxyID: origin, Addr: a.Addr, HostKey: a.HostKey,
			Connected: time.Unix(0, a.ConnectedUnixNano), LastSeen: time.Unix(0, a.LastSeenUnixNano),
		}
		s.Routes = append(s.Routes, AgentRoute{Agent: rec, Online: pid != nil, Tunnel: pid})
		for _, res := range a.Resources {
			e := Endpoint{Resource: model.Resource{
				Name: res.Name, AgentID: a.AgentId, Kind: res.Kind, Labels: res.Labels, Port: int(res.Port),
				Healthy: res.Healthy, Detail: res.Detail, ProxyID: origin, LastSeen: rec.LastSeen,
			}, Online: pid != nil, Tunnel: pid, Connected: rec.Connected, Region: r.repl.peers[origin].region,
				RTT: time.Duration(a.RttMicros) * time.Microsecond}
			s.Resources[res.Name] = append(s.Resources[res.Name], e)
		}
	})
	for _, eps := range s.Resources {
		if len(eps) > 1 {
			slices.SortFunc(eps, func(a, b Endpoint) int {
				return cmp.Or(strings.Compare(a.AgentID, b.AgentID), strings.Compare(a.ProxyID, b.ProxyID))
			})
		}
	}
	s.Routes = sortRoutes(s.Routes)
	s.Definitions = r.cfgState.defs
	s.Policy = r.cfgState.policy
	s.Synced = r.repl.synced(now)
	r.cfg.Table.p.Store(s)
	if r.defsChanged {
		r.defsChanged = false
		if r.cfg.OnDefinitions != nil {
			r.cfg.OnDefinitions(s.Definitions)
		}
		if r.cfg.OnPolicy != nil {
			r.cfg.OnPolicy(s.Policy)
		}
	}
}

// sortRoutes returns routes sorted by proxy and agent id. It sorts an
// index, not the routes themselves: an AgentRoute is large, and moving
// thousands of them made up a third of a publish.
func sortRoutes(routes []AgentRoute) []AgentRoute {
	idx := make([]int32, len(routes))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(i, j int32) int {
		a, b := &routes[i], &routes[j]
		return cmp.Or(strings.Compare(a.ProxyID, b.ProxyID), strings.Compare(a.ID, b.ID))
	})
	out := make([]AgentRoute, len(routes))
	for i, j := range idx {
		out[i] = routes[j]
	}
	return out
}
