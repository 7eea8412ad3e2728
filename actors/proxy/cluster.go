package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"

	"github.com/warren-proxy/warren/actors/forward"
	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/actors/tunnel"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/membership"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/peer"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// advertised turns a listen address into one others can dial: an
// unspecified host is replaced by the host of public_addr.
func (p *Proxy) advertised(listen, bound string) (string, error) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return bound, nil
	}
	pub, _, _ := net.SplitHostPort(p.publicAddr)
	if ip := net.ParseIP(pub); pub == "" || (ip != nil && ip.IsUnspecified()) {
		return "", fmt.Errorf("%s listens on all interfaces: set public_addr (or an advertise address) so other proxies and agents can reach it", listen)
	}
	return net.JoinHostPort(pub, port), nil
}

// startPeer starts protoactor remote, with our data streams on the same
// gRPC server, mutual TLS from the cluster TLS CA, and the guard against
// remote's unimplemented calls.
func (p *Proxy) startPeer() error {
	host, portText, err := net.SplitHostPort(p.cfg.Peer.Listen)
	if err != nil {
		return fmt.Errorf("peer.listen: %w", err)
	}
	port, _ := strconv.Atoi(portText)
	var ips []net.IP
	var names []string
	for _, a := range []string{p.cfg.Peer.Listen, p.cfg.Peer.Advertise, p.publicAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			if ip := net.ParseIP(h); ip != nil {
				if !ip.IsUnspecified() {
					ips = append(ips, ip)
				}
			} else {
				names = append(names, h)
			}
		}
	}
	certPEM, keyPEM, err := p.auth.IssueTLSCert(p.cfg.ID, names, ips, p.cfg.Tunnel.CertTTL, p.cfg.Clock())
	if err != nil {
		return fmt.Errorf("issue peer certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("load peer certificate: %w", err)
	}
	id := peer.Identity{Cert: cert, CAs: p.auth.TLSCertPool()}
	scfg := peer.ServerConfig{
		Identity:  id,
		Handler:   forward.Server{Rendezvous: p.rendezvous, Logger: p.log, Release: p.release}.ServeStream,
		AllowPeer: p.isPeer,
		Logger:    p.log,
	}
	opts, err := peer.ServerOptions(scfg)
	if err != nil {
		return err
	}
	// remote.Start panics when it cannot listen; find out first.
	probe, err := net.Listen("tcp", p.cfg.Peer.Listen)
	if err != nil {
		return fmt.Errorf("listen for peers on %s: %w", p.cfg.Peer.Listen, err)
	}
	if port == 0 {
		// Keep the port the probe found, so it can be advertised.
		_, pt, _ := net.SplitHostPort(probe.Addr().String())
		port, _ = strconv.Atoi(pt)
	}
	probe.Close()
	rcfg := []remote.ConfigOption{
		remote.WithServerOptions(opts...),
		remote.WithDialOptions(peer.DialOptions(id)...),
		// The outbox to each peer is a ring that grows on demand; remote's
		// default first size, a million slots (16 MiB), is touched page by
		// page as messages cycle through it, and so grew every proxy's
		// memory by 16 MiB per peer in steady state.
		remote.WithEndpointWriterQueueSize(endpointQueueSize),
	}
	bound := net.JoinHostPort(host, strconv.Itoa(port))
	adv := p.cfg.Peer.Advertise
	if adv == "" {
		if adv, err = p.advertised("peer.listen", bound); err != nil {
			return err
		}
	}
	rcfg = append(rcfg, remote.WithAdvertisedHost(adv))
	p.remote = remote.NewRemote(p.system, peerRemoteConfig(host, port, rcfg...))
	if err := startRemote(p.remote); err != nil {
		return fmt.Errorf("start peer endpoint on %s: %w", bound, err)
	}
	p.peerAddr = p.system.Address()
	// A broken peer link is news before membership has decided: routes
	// through that proxy are held back at once.
	p.system.EventStream.Subscribe(func(msg any) {
		if ev, ok := msg.(*remote.EndpointTerminatedEvent); ok && p.router != nil {
			p.system.Root.Send(p.router, &router.PeerUnreachable{Addr: ev.Address})
		}
	})
	if err := p.startFarPeer(scfg); err != nil {
		return err
	}
	p.dialer = peer.NewDialer(id, p.log, peer.WithFar(p.otherRegion))
	return nil
}

// startFarPeer serves the data streams of proxies of other regions on
// peer.far_listen, a gRPC server of its own whose windows follow the path
// (peer.FarServerOptions), and sets the address to advertise for it.
func (p *Proxy) startFarPeer(scfg peer.ServerConfig) error {
	if p.cfg.Peer.FarListen == "" {
		return nil
	}
	opts, err := peer.FarServerOptions(scfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", p.cfg.Peer.FarListen)
	if err != nil {
		return fmt.Errorf("listen for peers of other regions on %s (peer.far_listen; %q turns it off): %w", p.cfg.Peer.FarListen, FarListenOff, err)
	}
	p.farAddr = p.cfg.Peer.FarAdvertise
	if p.farAddr == "" {
		host, _, _ := net.SplitHostPort(p.peerAddr)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		p.farAddr = net.JoinHostPort(host, port)
	}
	p.farSrv = grpc.NewServer(opts...)
	p.farDone = make(chan struct{})
	// Not in p.wg: Close stops this server with protoactor's, after the
	// sessions, whose streams it carries.
	go func() {
		defer close(p.farDone)
		if err := p.farSrv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.log.Error("far peer listener stopped", "err", err)
		}
	}()
	return nil
}

// otherRegion reports whether the peer address is a member of another
// region, and the address of its far port: each data stream to it gets a
// connection of its own, with windows sized by gRPC's BDP estimation at
// both ends (see peer.WithFar).
func (p *Proxy) otherRegion(peerAddr string) (string, bool) {
	if p.members == nil {
		return "", false
	}
	for _, m := range p.members.Members() {
		if m.PeerAddr == peerAddr {
			return m.FarPeerAddr, m.Region != p.cfg.Region
		}
	}
	return "", false
}

// peerRemoteConfig is protoactor remote's configuration for the peer
// endpoint, with one connection attempt per outbox. remote retries a
// failed connection MaxRetryCount times, 2 s apart, and each retry dials a
// new gRPC connection over the one before without closing it: with the
// default five, every message to a proxy that is down left four gRPC
// connections (and their goroutines) behind for good, and held the outbox
// for 10 s. With one attempt the outbox gives up after 2 s, closes its one
// connection, and reports the peer unreachable (EndpointTerminatedEvent);
// the next message to that peer starts a fresh outbox.
func peerRemoteConfig(host string, port int, opts ...remote.ConfigOption) *remote.Config {
	cfg := remote.Configure(host, port, opts...)
	cfg.MaxRetryCount = 1
	return cfg
}

// endpointQueueSize is the first size of the outbox to each peer, in
// messages; it doubles whenever a burst needs more.
const endpointQueueSize = 4096

func startRemote(r *remote.Remote) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	r.Start()
	return nil
}

// startMembership joins the cluster's gossip and follows it.
func (p *Proxy) startMembership(ctx context.Context) error {
	key := []byte(nil)
	var err error
	if p.cfg.Gossip.SecretKey != "" {
		key, err = pki.DecodeGossipKey(p.cfg.Gossip.SecretKey)
	} else {
		key, err = p.auth.GossipKey()
	}
	if err != nil {
		return fmt.Errorf("gossip key: %w", err)
	}
	tunnelAddr, err := p.advertised("listen.tunnel", p.tunnelLn.Addr().String())
	if err != nil {
		return err
	}
	httpAddr, _ := p.advertised("listen.http", p.httpLn.Addr().String())
	p.tunnelAddr = tunnelAddr
	p.members, err = membership.New(membership.Config{
		Meta: membership.Meta{
			ProxyID:     p.cfg.ID,
			Region:      p.cfg.Region,
			Zone:        p.cfg.Zone,
			Version:     Version,
			TunnelAddr:  tunnelAddr,
			PeerAddr:    p.peerAddr,
			FarPeerAddr: p.farAddr,
			UserAddr:    p.publicAddr,
			HTTPAddr:    httpAddr,
		},
		BindAddr:            p.cfg.Gossip.Listen,
		AdvertiseAddr:       p.cfg.Gossip.Advertise,
		RegionBindAddr:      p.cfg.Gossip.RegionListen,
		RegionAdvertiseAddr: p.cfg.Gossip.RegionAdvertise,
		Seeds:               p.cfg.Gossip.Seeds,
		SecretKey:           key,
		Profile:             p.cfg.Gossip.Profile,
		Logger:              p.log.With("component", "gossip"),
	})
	if err != nil {
		return err
	}
	if err := p.members.Start(ctx); err != nil {
		return err
	}
	// The router waits for the routes and configuration of the peers alive
	// now before the proxy reports ready; tell it who they are first.
	for _, m := range p.members.Members() {
		if m.ProxyID != p.cfg.ID && m.State == membership.Alive {
			p.system.Root.Send(p.router, &router.MemberUp{ID: m.ProxyID, PeerAddr: m.PeerAddr, Region: m.Region})
		}
	}
	p.system.Root.Send(p.router, &router.PeersKnown{})
	p.prober = &forward.Prober{
		System:   p.system,
		Members:  p.members.Members,
		Self:     p.cfg.ID,
		Router:   func(addr string) *actor.PID { return actor.NewPID(addr, router.RouterName) },
		Load:     p.load,
		Interval: 2 * time.Second,
		Timeout:  3 * time.Second,
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.followMembers()
	}()
	go func() {
		defer p.wg.Done()
		p.prober.Run(ctx)
	}()
	return nil
}

// followMembers turns membership events into router messages and proxy
// set updates for agents, until membership closes.
func (p *Proxy) followMembers() {
	for ev := range p.members.Events() {
		m := ev.Member
		p.metrics.memberEvent(ev)
		if m.ProxyID == p.cfg.ID {
			continue
		}
		switch ev.Type {
		case membership.EventJoin, membership.EventUpdate:
			p.system.Root.Send(p.router, &router.MemberUp{ID: m.ProxyID, PeerAddr: m.PeerAddr, Region: m.Region})
		case membership.EventLeave:
			p.system.Root.Send(p.router, &router.MemberDown{ID: m.ProxyID, Reason: ev.Reason})
			p.prober.Forget(m.ProxyID)
			// Its data links close as their last streams end.
			p.dialer.Forget(m.PeerAddr, m.FarPeerAddr)
		}
		p.pushProxySet()
	}
}

// peerWait is how long a call from a peer that membership does not know
// yet waits for gossip to tell of it: a proxy that has just joined talks to
// its peers before gossip has reached every one of them.
const peerWait = 3 * time.Second

// isPeer approves a peer's TLS identity. The certificate already chains to
// the cluster TLS CA (mutual TLS); its common name must be the id of a live
// member, so a certificate of a proxy that left (or never joined the
// gossip, which needs the gossip key too) opens nothing.
func (p *Proxy) isPeer(id string) bool {
	if !model.ValidName(id) || id == p.cfg.ID {
		return false
	}
	deadline := time.Now().Add(peerWait)
	for {
		if p.members != nil {
			for _, m := range p.members.Members() {
				if m.ProxyID == id && m.State != membership.Dead {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			p.refusedPeers.Event("peer", model.Quote(id))
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxySet is what agents are told: every live proxy's tunnel address.
func (p *Proxy) proxySet() []revtunnel.ProxyInfo {
	if p.members == nil {
		return []revtunnel.ProxyInfo{{ID: p.cfg.ID, Region: p.cfg.Region, Zone: p.cfg.Zone, TunnelAddr: p.tunnelAddr}}
	}
	var out []revtunnel.ProxyInfo
	for _, m := range p.members.Members() {
		if m.State == membership.Alive && m.TunnelAddr != "" {
			out = append(out, revtunnel.ProxyInfo{ID: m.ProxyID, Region: m.Region, Zone: m.Zone, TunnelAddr: m.TunnelAddr})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// pushProxySet tells every local agent the current proxy set.
func (p *Proxy) pushProxySet() {
	p.toAgents(&tunnel.ProxySet{Set: revtunnel.ProxySet{Proxies: p.proxySet()}})
}

// toAgents sends msg to the actor of every tunnel on this proxy.
func (p *Proxy) toAgents(msg any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid := range p.tunPIDs {
		p.system.Root.Send(pid, msg)
	}
}

// handOffWait bounds how long a proxy that shuts down waits for its
// agents to open their tunnels elsewhere.
const handOffWait = 5 * time.Second

// handOff, the first step of a shutdown, tells every local agent that
// this proxy is leaving (a proxy set without it, marked Leaving), and
// waits, at most handOffWait, until none of them serves a resource
// through it any more: each opens a tunnel to another proxy first, then
// withdraws its routes here (make before break). Meanwhile this proxy
// still forwards every session. It does not wait for an agent that has
// nowhere to go (a tunnel on every other live proxy already). Agents
// older than the Leaving flag, and mesh slots (a tunnel to every proxy),
// keep their routes here until the tunnel closes.
func (p *Proxy) handOff() {
	if p.system == nil || p.members == nil || p.router == nil {
		return
	}
	var others []revtunnel.ProxyInfo
	for _, info := range p.proxySet() {
		if info.ID != p.cfg.ID {
			others = append(others, info)
		}
	}
	// waiting counts the agents that serve resources through a tunnel
	// here and have a proxy to move to: another live one without a tunnel
	// of theirs. An agent with a tunnel on every other proxy already (two
	// tunnels and two proxies) stays until its tunnel here closes.
	waiting := func() int {
		snap := p.table.Snapshot()
		here := map[string]bool{}
		for _, eps := range snap.Resources {
			for _, e := range eps {
				if e.Local && e.Online {
					here[e.AgentID] = true
				}
			}
		}
		on := map[string]map[string]bool{} // agent → proxies with its tunnel
		for _, r := range snap.Routes {
			if r.Online && here[r.ID] {
				if on[r.ID] == nil {
					on[r.ID] = map[string]bool{}
				}
				on[r.ID][r.ProxyID] = true
			}
		}
		n := 0
		for id := range here {
			for _, o := range others {
				if !on[id][o.ID] {
					n++
					break
				}
			}
		}
		return n
	}
	before := waiting()
	if len(others) == 0 || before == 0 {
		return
	}
	p.toAgents(&tunnel.ProxySet{Set: revtunnel.ProxySet{Proxies: others, Leaving: true}})
	start := time.Now()
	left := before
	for left > 0 && time.Since(start) < handOffWait {
		time.Sleep(20 * time.Millisecond)
		left = waiting()
	}
	took := time.Since(start).Round(time.Millisecond).String()
	if left == 0 {
		p.log.Info(HandedOffMsg, "agents", before, "took", took)
		return
	}
	p.log.Warn("shutting down with agents still routed here that could have moved (each reconnects once its tunnel closes): agents older than the hand-off, mesh slots, or proxies too busy to take them", "agents", left, "of", before, "waited", took)
}

// HandedOffMsg is logged when a proxy that shuts down has seen every
// agent's routes through it move to another proxy.
const HandedOffMsg = "every agent opened its tunnel elsewhere before this proxy shuts down"

// pushDefinitions tells every local agent the dynamic resource
// definitions (called by the router when they change).
func (p *Proxy) pushDefinitions(defs []model.Definition) {
	p.toAgents(&tunnel.Definitions{Set: revtunnel.Definitions{Definitions: defs}})
}

// pushPolicy tells every local agent the cluster's roles and user locks
// when they changed: their SSH servers check logins against them, and end
// the sessions of users locked since.
func (p *Proxy) pushPolicy(pol *access.Policy) {
	var stored []access.Role
	for _, r := range pol.Roles() {
		if !access.IsPreset(r.Name) {
			stored = append(stored, r)
		}
	}
	var locks []access.Lock
	for _, l := range pol.Locks() {
		if l.Kind == access.LockUser {
			locks = append(locks, l)
		}
	}
	roles, _ := json.Marshal(stored) // plain structs: cannot fail
	lockJSON, _ := json.Marshal(locks)
	set := revtunnel.PolicySet{Roles: roles, Locks: lockJSON}
	if old := p.policy.Swap(&set); old != nil && string(old.Roles) == string(set.Roles) && string(old.Locks) == string(set.Locks) {
		return
	}
	p.toAgents(&tunnel.Policy{Set: set})
}

// policySet is what a new tunnel's hello reply carries.
func (p *Proxy) policySet() *revtunnel.PolicySet {
	if set := p.policy.Load(); set != nil {
		return set
	}
	return &revtunnel.PolicySet{Roles: json.RawMessage("[]")}
}

// Log messages of a drain, for operators and tests.
const (
	DrainingMsg = "draining: the sessions that entered here have the shutdown grace"
	DrainedMsg  = "drained: every session that entered here has ended"
)

// drain runs after the hand-off: the streams this proxy forwards for other
// proxies' sessions end, so their entry proxies resume them over the
// agents' new tunnels; the sessions that entered here get shutdown.grace
// to end, their users told so (an ssh resource's session shows it on the
// terminal). A second signal (Hurry) or the grace's end stops the wait.
func (p *Proxy) drain() {
	p.releaseOnce.Do(func() { close(p.release) })
	n := p.live.Len()
	if n == 0 {
		return
	}
	grace := p.cfg.Shutdown.Grace
	told := p.live.Tell(fmt.Sprintf("proxy %s is shutting down; this session ends within %s. Connect again to go on through another proxy.", p.cfg.ID, grace))
	p.log.Info(DrainingMsg, "sessions", n, "told", told, "grace", grace.String())
	t := time.NewTimer(grace)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.C:
			p.log.Warn("shutdown grace over; ending the sessions left", "sessions", p.live.Len())
			p.live.End()
			return
		case <-p.hurry:
			p.log.Warn("drain cut short; ending the sessions left", "sessions", p.live.Len())
			p.live.End()
			return
		case <-tick.C:
			if p.live.Len() == 0 {
				p.log.Info(DrainedMsg)
				return
			}
		}
	}
}
