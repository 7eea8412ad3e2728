package router

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
)

// These tests run several routers in one actor system inside a synctest
// bubble: every peer link goes through a wire actor the test controls (it
// can drop or hold messages), and the routers' tickers (sweep, beacon) and
// grace periods run on the bubble's clock, so nothing sleeps for real.

// wire carries messages to one peer router; it drops or holds messages
// the test asks it to.
type wire struct {
	to *actor.PID

	mu   sync.Mutex
	drop func(any) bool // drop a message for which drop is true
	hold func(any) bool // keep a message back until release
	held []heldMsg
	cut  bool // drop everything
}

type heldMsg struct {
	msg    any
	sender *actor.PID
}

func (w *wire) Receive(ctx actor.Context) {
	msg := ctx.Message()
	if _, system := msg.(actor.SystemMessage); system {
		return
	}
	switch msg.(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	w.mu.Lock()
	cut := w.cut
	drop := w.drop != nil && w.drop(msg)
	hold := w.hold != nil && w.hold(msg)
	if hold {
		w.held = append(w.held, heldMsg{msg, ctx.Sender()})
	}
	w.mu.Unlock()
	if cut || drop || hold {
		return
	}
	ctx.RequestWithCustomSender(w.to, msg, ctx.Sender())
}

// release delivers the held messages, oldest first.
func (w *wire) release(sys *actor.ActorSystem) {
	w.mu.Lock()
	held := w.held
	w.held, w.hold = nil, nil
	w.mu.Unlock()
	for _, h := range held {
		sys.Root.RequestWithCustomSender(w.to, h.msg, h.sender)
	}
}

func (w *wire) set(f func(w *wire)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(w)
}

// mesh is a cluster of routers whose peer links are wires.
type mesh struct {
	t       *testing.T
	sys     *actor.ActorSystem
	routers map[string]*harness
	mu      sync.Mutex          // guards wires: routers make theirs as they meet peers
	wires   map[[2]string]*wire // [from, to]
}

// newMesh starts routers for ids, each addressed as "addr-<id>", and a
// wire for every ordered pair. Call inside a synctest bubble.
func newMesh(t *testing.T, ids ...string) *mesh {
	t.Helper()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	m := &mesh{t: t, sys: sys, routers: map[string]*harness{}, wires: map[[2]string]*wire{}}
	for _, id := range ids {
		from := id
		h := &harness{sys: sys, clock: newFakeClock()}
		h.table = NewTable()
		props, err := NewProps(Config{
			ProxyID: id, Region: "eu", Table: h.table, SweepInterval: 100 * time.Millisecond,
			HeartbeatTTL: 30 * time.Second, OfflineRetention: 24 * time.Hour,
			Epoch: 1,
			PeerRouter: func(addr string) *actor.PID {
				to := addr[len("addr-"):]
				return m.wirePID(from, to)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		h.router = sys.Root.Spawn(props)
		m.routers[id] = h
	}
	return m
}

func (m *mesh) wirePID(from, to string) *actor.PID {
	w := m.wire(from, to)
	return m.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return w }))
}

// wire returns the link from → to, made on first use.
func (m *mesh) wire(from, to string) *wire {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.wires[[2]string{from, to}]
	if w == nil {
		w = &wire{to: m.routers[to].router}
		m.wires[[2]string{from, to}] = w
	}
	return w
}

// allWires returns every link made so far.
func (m *mesh) allWires() []*wire {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*wire
	for _, w := range m.wires {
		out = append(out, w)
	}
	return out
}

// join tells every router of every other, as membership would.
func (m *mesh) join() {
	for id, h := range m.routers {
		for other := range m.routers {
			if other != id {
				h.send(&MemberUp{ID: other, PeerAddr: "addr-" + other, Region: "eu"})
			}
		}
		h.send(&PeersKnown{})
	}
}

// stop stops every router and lets the bubble's goroutines end.
func (m *mesh) stop() {
	for _, h := range m.routers {
		h.stop(m.t)
	}
	m.sys.Shutdown()
	time.Sleep(time.Minute)
}

// remote reports whether router at sees agent's resource name through the
// tunnel on proxy origin, usable.
func remoteUsable(name, agent, origin string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		e, ok := endpoint(s, name, agent)
		return ok && e.Usable() && !e.Local && e.ProxyID == origin
	}
}

func gone(name, agent string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		e, ok := endpoint(s, name, agent)
		return !ok || !e.Usable()
	}
}

// settle lets every message in flight and every timer due now run.
func settle() { synctest.Wait() }

func TestRoutesReplicateToPeersAndGoWithTheirTunnel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2", "p3")
		m.join()
		tun := spawnTunnel(t, m.sys)
		p1 := m.routers["p1"]
		p1.send(up("a1", tun))
		p1.send(hb("a1", tun, web))
		settle()
		for _, id := range []string{"p2", "p3"} {
			if s := m.routers[id].table.Snapshot(); !remoteUsable("web", "a1", "p1")(s) {
				t.Errorf("%s: web via p1 not usable: %s", id, describe(s))
			}
			if e, _ := endpoint(m.routers[id].table.Snapshot(), "web", "a1"); !e.Tunnel.Equal(tun.pid) {
				t.Errorf("%s: tunnel %v, want p1's tunnel actor %v", id, e.Tunnel, tun.pid)
			}
		}
		start := time.Now()
		p1.send(down("a1", tun))
		settle()
		for _, id := range []string{"p2", "p3"} {
			if s := m.routers[id].table.Snapshot(); !gone("web", "a1")(s) {
				t.Errorf("%s: web via p1 still usable after its tunnel went: %s", id, describe(s))
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("withdrawal took %s of the bubble's clock: a delta goes at once", d)
		}
		m.stop()
	})
}

func TestALostDeltaIsHealedByTheNextBeacon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2")
		m.join()
		settle()
		// The link p1→p2 loses every delta that carries a change.
		m.wire("p1", "p2").set(func(w *wire) {
			w.drop = func(msg any) bool {
				d, ok := msg.(*clusterpb.RouteDelta)
				return ok && len(d.Upserts)+len(d.Removals) > 0
			}
		})
		tun := spawnTunnel(t, m.sys)
		m.routers["p1"].send(up("a1", tun))
		m.routers["p1"].send(hb("a1", tun, web))
		settle()
		if s := m.routers["p2"].table.Snapshot(); !gone("web", "a1")(s) {
			t.Fatalf("p2 has the route although its delta was lost: %s", describe(s))
		}
		// The beacon (every second) tells p2 it is behind; it asks for
		// p1's whole state.
		time.Sleep(time.Second)
		settle()
		if s := m.routers["p2"].table.Snapshot(); !remoteUsable("web", "a1", "p1")(s) {
			t.Errorf("p2 did not heal after a beacon: %s", describe(s))
		}
		m.stop()
	})
}

func TestAReorderedOldDeltaNeverResurrectsARoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2")
		m.join()
		settle()
		w := m.wire("p1", "p2")
		// Hold back the delta that brings the route up …
		w.set(func(w *wire) {
			w.hold = func(msg any) bool {
				d, ok := msg.(*clusterpb.RouteDelta)
				return ok && len(d.Upserts) > 0
			}
		})
		tun := spawnTunnel(t, m.sys)
		p1 := m.routers["p1"]
		p1.send(up("a1", tun))
		p1.send(hb("a1", tun, web))
		settle()
		// … let the one that removes it pass, then deliver the old one.
		w.set(func(w *wire) { w.hold = nil })
		p1.send(down("a1", tun))
		settle()
		w.release(m.sys)
		settle()
		time.Sleep(3 * time.Second) // beacons come and go
		settle()
		if s := m.routers["p2"].table.Snapshot(); !gone("web", "a1")(s) {
			t.Errorf("an old delta brought a withdrawn route back on p2: %s", describe(s))
		}
		m.stop()
	})
}

func TestAPeerThatDiesTakesItsRoutesAtOnceAndABrokenLinkHoldsThemBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2")
		m.join()
		tun := spawnTunnel(t, m.sys)
		m.routers["p1"].send(up("a1", tun))
		m.routers["p1"].send(hb("a1", tun, web))
		settle()
		p2 := m.routers["p2"]
		if s := p2.table.Snapshot(); !remoteUsable("web", "a1", "p1")(s) {
			t.Fatalf("p2 lacks the route: %s", describe(s))
		}

		// The peer link breaks (protoactor remote says so): held back.
		p2.send(&PeerUnreachable{Addr: m.routers["p1"].router.Address})
		settle()
		if s := p2.table.Snapshot(); !gone("web", "a1")(s) {
			t.Errorf("a route through an unreachable peer is still offered: %s", describe(s))
		}
		// p1 speaks again (its beacon): the route is back.
		time.Sleep(time.Second)
		settle()
		if s := p2.table.Snapshot(); !remoteUsable("web", "a1", "p1")(s) {
			t.Errorf("the route did not come back once p1 spoke: %s", describe(s))
		}

		// Membership says p1 is dead: its routes go, and stay gone even
		// if a late message from it arrives.
		m.wire("p1", "p2").set(func(w *wire) { w.cut = true })
		p2.send(&MemberDown{ID: "p1", Reason: "dead"})
		settle()
		if s := p2.table.Snapshot(); !gone("web", "a1")(s) {
			t.Errorf("a dead peer's route is still offered: %s", describe(s))
		}
		m.stop()
	})
}

func TestConfigReplicatesAndConcurrentWritesConverge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2", "p3")
		m.join()
		settle()
		put := func(on, desc string) {
			t.Helper()
			role, _ := json.Marshal(access.Role{Name: "dev", Allow: access.Rules{Names: []string{"web-*"}, Logins: []string{"dev"}}, Description: desc})
			res, err := m.sys.Root.RequestFuture(m.routers[on].router, &PutConfig{Key: "role/dev", Value: role}, 5*time.Second).Result()
			if err != nil || res.(*ConfigResult).Err != nil {
				t.Fatalf("put on %s: %v %v", on, err, res)
			}
		}
		put("p1", "first")
		settle()
		for id, h := range m.routers {
			if r, ok := h.table.Snapshot().Policy.Role("dev"); !ok || r.Description != "first" {
				t.Errorf("%s: role dev %+v, %v", id, r, ok)
			}
		}

		// Two proxies write the same key while cut off from each other;
		// once the links are back (anti-entropy) every proxy holds the
		// same, later, write.
		for _, w := range m.allWires() {
			w.set(func(w *wire) { w.cut = true })
		}
		put("p2", "from p2")
		time.Sleep(time.Millisecond)
		put("p3", "from p3")
		settle()
		for _, w := range m.allWires() {
			w.set(func(w *wire) { w.cut = false })
		}
		time.Sleep(time.Minute) // anti-entropy rounds
		settle()
		var seen []string
		for _, id := range []string{"p1", "p2", "p3"} {
			r, _ := m.routers[id].table.Snapshot().Policy.Role("dev")
			seen = append(seen, r.Description)
		}
		if seen[0] != seen[1] || seen[1] != seen[2] || seen[0] != "from p3" {
			t.Errorf("after the partition healed: %q, want every proxy on the later write (from p3)", seen)
		}
		m.stop()
	})
}

func TestAStartingProxyIsSyncedOnceItHasItsPeersOrWaitedForThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMesh(t, "p1", "p2")
		p2 := m.routers["p2"]
		// p1 never answers p2.
		m.wire("p2", "p1").set(func(w *wire) { w.cut = true })
		m.wire("p1", "p2").set(func(w *wire) { w.cut = true })
		p2.send(&MemberUp{ID: "p1", PeerAddr: "addr-p1", Region: "eu"})
		p2.send(&PeersKnown{})
		settle()
		start := time.Now()
		if p2.table.Snapshot().Synced {
			t.Fatal("synced with a peer that never answered")
		}
		for !p2.table.Snapshot().Synced {
			time.Sleep(100 * time.Millisecond)
			settle()
		}
		if d := time.Since(start); d < syncGrace-time.Second || d > syncGrace+time.Second {
			t.Errorf("synced after %s, want after syncGrace (%s)", d, syncGrace)
		}
		m.stop()
	})
}
