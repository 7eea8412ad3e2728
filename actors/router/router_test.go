package router

import (
	"fmt"
	"github.com/warren-proxy/warren/cluster/access"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/catalog"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Every test runs in a synctest bubble: the router's tickers, the polls
// below and waitFor run on the bubble's clock, so no test waits for real.

// waitFor bounds every wait in these tests, so a bug fails a test instead
// of hanging it.
const waitFor = 10 * time.Second

// fakeClock is the router's clock (expiry, retention); tests move it by
// hand, apart from the bubble's clock that drives the sweep ticker.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	t.Cleanup(sys.Shutdown)
	return sys
}

// fakeTunnel stands in for a tunnel actor and records what the router
// sends it.
type fakeTunnel struct {
	pid        *actor.PID
	superseded chan *Superseded
}

func spawnTunnel(t *testing.T, sys *actor.ActorSystem) *fakeTunnel {
	t.Helper()
	ft := &fakeTunnel{superseded: make(chan *Superseded, 8)}
	ft.pid = sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*Superseded); ok {
			ft.superseded <- m
		}
	}))
	t.Cleanup(func() { _ = sys.Root.StopFuture(ft.pid).Wait() })
	return ft
}

type harness struct {
	stopped bool
	sys     *actor.ActorSystem
	table   *Table
	router  *actor.PID
	clock   *fakeClock
}

// start spawns a router with cfg (ProxyID, Table, Clock, SweepInterval
// filled in when empty) and stops it at cleanup.
func start(t *testing.T, sys *actor.ActorSystem, cfg Config) *harness {
	t.Helper()
	h := &harness{sys: sys, clock: newFakeClock()}
	if cfg.ProxyID == "" {
		cfg.ProxyID = "proxy-1"
	}
	if cfg.Table == nil {
		cfg.Table = NewTable()
	}
	if cfg.Clock == nil {
		cfg.Clock = h.clock.Now
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 5 * time.Millisecond
	}
	if cfg.HeartbeatTTL == 0 {
		cfg.HeartbeatTTL = 30 * time.Second
	}
	if cfg.OfflineRetention == 0 {
		cfg.OfflineRetention = 24 * time.Hour
	}
	h.table = cfg.Table
	props, err := NewProps(cfg)
	if err != nil {
		t.Fatalf("NewProps: %v", err)
	}
	h.router = sys.Root.Spawn(props)
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	if err := h.sys.Root.StopFuture(h.router).Wait(); err != nil {
		t.Errorf("stop router: %v", err)
	}
}

func (h *harness) send(msg any) { h.sys.Root.Send(h.router, msg) }

// sync returns once the router has applied every message sent before and
// published the result.
func (h *harness) sync(t *testing.T) *Snapshot {
	t.Helper()
	res, err := h.sys.Root.RequestFuture(h.router, &Sync{}, waitFor).Result()
	if err != nil || res != true {
		t.Fatalf("sync with router: got %v, %v; want true", res, err)
	}
	return h.table.Snapshot()
}

// waitUntil polls the table until cond holds and returns that snapshot.
func (h *harness) waitUntil(t *testing.T, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s := h.table.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s; last snapshot: %s", what, describe(s))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func describe(s *Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d", s.Version)
	for _, sum := range s.List() {
		fmt.Fprintf(&b, " %s(%s %d/%d)", sum.Name, sum.Status, sum.Healthy, sum.Agents)
	}
	for id, a := range s.Agents {
		fmt.Fprintf(&b, " agent %s online=%v", id, a.Online)
	}
	return b.String()
}

// endpoint returns agent's endpoint for name, if listed.
func endpoint(s *Snapshot, name, agent string) (Endpoint, bool) {
	for _, e := range s.Lookup(name) {
		if e.AgentID == agent {
			return e, true
		}
	}
	return Endpoint{}, false
}

func usable(name, agent string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		e, ok := endpoint(s, name, agent)
		return ok && e.Usable()
	}
}

func offline(name, agent string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		e, ok := endpoint(s, name, agent)
		return ok && !e.Online && !e.Usable() && e.Tunnel == nil
	}
}

func up(id string, tun *fakeTunnel) *TunnelUp {
	return &TunnelUp{Agent: model.Agent{ID: id, Hostname: id + ".example", Version: "test"}, Tunnel: tun.pid}
}

// anyName is a scoped grant for every name: the pool tests are about
// routes, not grants (TestGrants is).
var anyName = access.Grant{Token: "0123456789ab", Names: []string{"*"}}

func hb(id string, tun *fakeTunnel, rs ...revtunnel.ResourceStatus) *Heartbeat {
	return &Heartbeat{AgentID: id, Tunnel: tun.pid, Grant: anyName, Resources: rs}
}

func down(id string, tun *fakeTunnel) *TunnelDown {
	return &TunnelDown{AgentID: id, Tunnel: tun.pid, Reason: "test"}
}

var (
	web = revtunnel.ResourceStatus{Name: "web", Kind: model.KindTCP, Labels: map[string]string{"env": "prod"}, Healthy: true}
	db  = revtunnel.ResourceStatus{Name: "db", Kind: model.KindTCP, Healthy: true}
)

func TestUpHeartbeatDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		t1 := spawnTunnel(t, sys)

		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web))
		s := h.waitUntil(t, "web is usable", usable("web", "agent-1"))

		e, _ := endpoint(s, "web", "agent-1")
		if !e.Tunnel.Equal(t1.pid) || e.ProxyID != "proxy-1" || e.Kind != model.KindTCP || e.Labels["env"] != "prod" {
			t.Errorf("got endpoint %+v, want web via the tunnel on proxy-1, tcp, env=prod", e)
		}
		ar, ok := s.Agents["agent-1"]
		if !ok || !ar.Online || !ar.Tunnel.Equal(t1.pid) || ar.ProxyID != "proxy-1" || ar.Hostname != "agent-1.example" {
			t.Errorf("got agent route %+v, want agent-1 online through its tunnel on proxy-1", ar)
		}
		if got := s.List(); len(got) != 1 || got[0].Status != "online" || got[0].Healthy != 1 {
			t.Errorf("got list %+v, want web online", got)
		}

		h.send(down("agent-1", t1))
		s = h.waitUntil(t, "web is offline", offline("web", "agent-1"))
		if s.Agents["agent-1"].Online {
			t.Error("agent-1 is online after TunnelDown")
		}
		if got := s.List(); len(got) != 1 || got[0].Status != "offline" {
			t.Errorf("got list %+v, want web listed offline", got)
		}

		// A heartbeat after the tunnel went down does not bring it back.
		h.send(hb("agent-1", t1, web))
		s = h.sync(t)
		if e, _ := endpoint(s, "web", "agent-1"); e.Online {
			t.Error("a heartbeat after TunnelDown brought web back online")
		}
	})
}

func TestHeartbeatUnknownAgentIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		t1 := spawnTunnel(t, sys)
		h.send(hb("stranger", t1, web))
		h.send(down("stranger", t1))
		s := h.sync(t)
		if len(s.Resources) != 0 || len(s.Agents) != 0 {
			t.Errorf("got %s, want an empty table: no TunnelUp was sent", describe(s))
		}
	})
}

// TestReconnect checks the invariant: messages from a tunnel that is no
// longer the agent's current one never take down or resurrect the route.
func TestReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		old, cur := spawnTunnel(t, sys), spawnTunnel(t, sys)

		h.send(up("agent-1", old))
		h.send(hb("agent-1", old, web))
		h.waitUntil(t, "web is usable through the old tunnel", usable("web", "agent-1"))

		// The agent connects again; the old tunnel is told to go.
		h.send(up("agent-1", cur))
		h.send(hb("agent-1", cur, web))
		select {
		case m := <-old.superseded:
			if !m.By.Equal(cur.pid) {
				t.Errorf("got Superseded{By: %v}, want By the new tunnel %v", m.By, cur.pid)
			}
		case <-time.After(waitFor):
			t.Fatal("the old tunnel was not told it was superseded")
		}
		s := h.waitUntil(t, "web routes through the new tunnel", func(s *Snapshot) bool {
			e, ok := endpoint(s, "web", "agent-1")
			return ok && e.Usable() && e.Tunnel.Equal(cur.pid)
		})
		if !s.Agents["agent-1"].Tunnel.Equal(cur.pid) {
			t.Errorf("got agent tunnel %v, want the new one %v", s.Agents["agent-1"].Tunnel, cur.pid)
		}

		// Late messages from the old tunnel change nothing.
		late := []struct {
			name string
			msg  any
		}{
			{"TunnelDown", down("agent-1", old)},
			{"heartbeat withdrawing web", hb("agent-1", old)},
			{"heartbeat adding db", hb("agent-1", old, web, db)},
			{"heartbeat marking web unhealthy", hb("agent-1", old, revtunnel.ResourceStatus{Name: "web", Kind: model.KindTCP, Healthy: false})},
		}
		for _, l := range late {
			h.send(l.msg)
			s := h.sync(t)
			e, ok := endpoint(s, "web", "agent-1")
			if !ok || !e.Usable() || !e.Tunnel.Equal(cur.pid) {
				t.Errorf("after a late %s from the old tunnel: got web %+v (listed %v), want usable through the new tunnel", l.name, e, ok)
			}
			if _, ok := endpoint(s, "db", "agent-1"); ok {
				t.Errorf("after a late %s from the old tunnel: db is listed", l.name)
			}
			if !s.Agents["agent-1"].Online {
				t.Errorf("after a late %s from the old tunnel: agent-1 is offline", l.name)
			}
		}
		select {
		case m := <-cur.superseded:
			t.Errorf("the current tunnel got %+v", m)
		default:
		}

		// The current tunnel goes down; the old one cannot resurrect it.
		h.send(down("agent-1", cur))
		h.waitUntil(t, "web is offline", offline("web", "agent-1"))
		h.send(hb("agent-1", old, web))
		h.send(hb("agent-1", cur, web))
		s = h.sync(t)
		if e, _ := endpoint(s, "web", "agent-1"); e.Online {
			t.Errorf("a heartbeat after the route went down resurrected it: %+v", e)
		}
		if s.Agents["agent-1"].Online {
			t.Error("agent-1 is online again without a TunnelUp")
		}

		// A TunnelUp from the same tunnel twice supersedes nothing.
		h.send(up("agent-1", cur))
		h.send(up("agent-1", cur))
		h.sync(t)
		select {
		case m := <-cur.superseded:
			t.Errorf("a repeated TunnelUp from the same tunnel superseded it: %+v", m)
		default:
		}
	})
}

func TestHeartbeatWithdrawsResource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		store := openStore(t, t.TempDir())
		h := start(t, sys, Config{Store: store})
		t1 := spawnTunnel(t, sys)

		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web, db))
		h.waitUntil(t, "web and db are usable", func(s *Snapshot) bool {
			return usable("web", "agent-1")(s) && usable("db", "agent-1")(s)
		})
		waitStored(t, store, "web and db are persisted", func(res []model.Resource) bool { return len(res) == 2 })

		h.send(hb("agent-1", t1, web))
		s := h.waitUntil(t, "db is withdrawn", func(s *Snapshot) bool { return len(s.Lookup("db")) == 0 })
		if !usable("web", "agent-1")(s) {
			t.Error("web is not usable after db was withdrawn")
		}
		if got := s.List(); len(got) != 1 || got[0].Name != "web" {
			t.Errorf("got list %+v, want only web", got)
		}
		waitStored(t, store, "db is deleted from the store", func(res []model.Resource) bool {
			return len(res) == 1 && res[0].Name == "web"
		})

		// An empty heartbeat withdraws everything.
		h.send(hb("agent-1", t1))
		s = h.waitUntil(t, "web is withdrawn", func(s *Snapshot) bool { return len(s.Resources) == 0 })
		if !s.Agents["agent-1"].Online {
			t.Error("an agent with no resources went offline; its tunnel is still up")
		}
	})
}

func TestHealthChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		t1 := spawnTunnel(t, sys)
		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web))
		h.waitUntil(t, "web is usable", usable("web", "agent-1"))

		sick := revtunnel.ResourceStatus{Name: "web", Kind: model.KindTCP, Labels: web.Labels, Healthy: false, Detail: "connection refused"}
		h.send(hb("agent-1", t1, sick))
		s := h.waitUntil(t, "web is unhealthy", func(s *Snapshot) bool {
			e, ok := endpoint(s, "web", "agent-1")
			return ok && e.Online && !e.Usable()
		})
		got := s.List()
		if len(got) != 1 || got[0].Status != "unhealthy" || got[0].Detail != "connection refused" || got[0].Healthy != 0 {
			t.Errorf("got list %+v, want web unhealthy with detail %q", got, "connection refused")
		}
		h.send(hb("agent-1", t1, web))
		h.waitUntil(t, "web is usable again", usable("web", "agent-1"))
	})
}

func TestHeartbeatTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		const ttl = time.Minute
		h := start(t, sys, Config{HeartbeatTTL: ttl})
		t1, tw := spawnTunnel(t, sys), spawnTunnel(t, sys)
		// The witness heartbeats once; its expiry shows that a sweep ran.
		witness := revtunnel.ResourceStatus{Name: "witness", Kind: model.KindTCP, Healthy: true}
		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web))
		h.send(up("agent-w", tw))
		h.send(hb("agent-w", tw, witness))
		h.waitUntil(t, "web is usable", usable("web", "agent-1"))

		// A fresh heartbeat before the TTL keeps web online past the first
		// heartbeat's expiry.
		h.clock.Advance(ttl * 2 / 3)
		h.send(hb("agent-1", t1, web))
		h.sync(t)
		h.clock.Advance(ttl * 2 / 3)
		s := h.waitUntil(t, "the witness expires", offline("witness", "agent-w"))
		if !usable("web", "agent-1")(s) {
			t.Errorf("web went offline although its last heartbeat is %s old, under the TTL of %s", ttl*2/3, ttl)
		}

		// No heartbeat for longer than the TTL: web goes offline, though the
		// tunnel is still up.
		h.clock.Advance(ttl)
		s = h.waitUntil(t, "web expires", offline("web", "agent-1"))
		if got := s.List(); len(got) != 2 || got[0].Name != "web" || got[0].Status != "offline" {
			t.Errorf("got list %+v, want web offline", got)
		}
		if !s.Agents["agent-1"].Online {
			t.Error("the agent went offline on a heartbeat TTL; only its resources should")
		}

		// The next heartbeat brings it back.
		h.send(hb("agent-1", t1, web))
		h.waitUntil(t, "web is usable after a new heartbeat", usable("web", "agent-1"))
	})
}

func TestOfflineRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		store := openStore(t, t.TempDir())
		const retention = time.Hour
		h := start(t, sys, Config{Store: store, OfflineRetention: retention, HeartbeatTTL: time.Minute})
		t1, tw := spawnTunnel(t, sys), spawnTunnel(t, sys)
		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web))
		h.waitUntil(t, "web is usable", usable("web", "agent-1"))
		h.send(down("agent-1", t1))
		h.waitUntil(t, "web is offline", offline("web", "agent-1"))
		waitStoredAgents(t, store, "agent-1 is persisted", func(agents []model.Agent, res []model.Resource) bool {
			return len(agents) == 1 && len(res) == 1
		})

		// Still listed just before the retention ends. The witness's
		// heartbeat expires in between, so a sweep is seen to have run.
		h.clock.Advance(retention - 2*time.Minute)
		witness := revtunnel.ResourceStatus{Name: "witness", Kind: model.KindTCP, Healthy: true}
		h.send(up("agent-w", tw))
		h.send(hb("agent-w", tw, witness))
		h.waitUntil(t, "the witness is usable", usable("witness", "agent-w"))
		h.clock.Advance(90 * time.Second)
		s := h.waitUntil(t, "the witness expires", offline("witness", "agent-w"))
		if _, ok := s.Agents["agent-1"]; !ok || len(s.Lookup("web")) != 1 {
			t.Errorf("agent-1 was pruned before its retention of %s ended: %s", retention, describe(s))
		}

		h.clock.Advance(time.Minute)
		h.waitUntil(t, "agent-1 is pruned", func(s *Snapshot) bool {
			_, ok := s.Agents["agent-1"]
			return !ok && len(s.Lookup("web")) == 0
		})
		waitStoredAgents(t, store, "agent-1 is deleted from the store", func(agents []model.Agent, res []model.Resource) bool {
			return len(agents) == 1 && agents[0].ID == "agent-w" && len(res) == 1 && res[0].Name == "witness"
		})
	})
}

func TestListTwoAgentsOneName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		t1, t2 := spawnTunnel(t, sys), spawnTunnel(t, sys)
		sick := revtunnel.ResourceStatus{Name: "web", Kind: model.KindTCP, Healthy: false, Detail: "upstream timeout"}

		// agent-b first, so sorting by agent id is visible.
		h.send(up("agent-b", t2))
		h.send(hb("agent-b", t2, sick))
		h.send(up("agent-a", t1))
		h.send(hb("agent-a", t1, web, db))
		s := h.waitUntil(t, "both agents serve web", func(s *Snapshot) bool {
			e, ok := endpoint(s, "web", "agent-b")
			return usable("web", "agent-a")(s) && ok && e.Online
		})

		eps := s.Lookup("web")
		if len(eps) != 2 || eps[0].AgentID != "agent-a" || eps[1].AgentID != "agent-b" {
			t.Errorf("got web endpoints %+v, want agent-a then agent-b", eps)
		}

		type row struct {
			name, status, detail string
			agents, healthy      int
		}
		list := func(s *Snapshot) []row {
			var out []row
			for _, sum := range s.List() {
				out = append(out, row{sum.Name, sum.Status, sum.Detail, sum.Agents, sum.Healthy})
			}
			return out
		}
		steps := []struct {
			name string
			msg  any
			want []row
		}{
			{"both up", nil, []row{{"db", "online", "", 1, 1}, {"web", "online", "", 2, 1}}},
			{"healthy agent down", down("agent-a", t1), []row{{"db", "offline", "", 1, 0}, {"web", "unhealthy", "upstream timeout", 2, 0}}},
			{"both down", down("agent-b", t2), []row{{"db", "offline", "", 1, 0}, {"web", "offline", "", 2, 0}}},
		}
		for _, st := range steps {
			if st.msg != nil {
				h.send(st.msg)
			}
			got := list(h.sync(t))
			if fmt.Sprint(got) != fmt.Sprint(st.want) {
				t.Errorf("%s: got list %+v, want %+v", st.name, got, st.want)
			}
		}
	})
}

func TestRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		dir := filepath.Join(t.TempDir(), "catalog")
		store := openStore(t, dir)

		first := start(t, sys, Config{Store: store})
		t1 := spawnTunnel(t, sys)
		node := revtunnel.ResourceStatus{Name: "node-1", Kind: model.KindSSH, Healthy: true}
		first.send(up("agent-1", t1))
		first.send(hb("agent-1", t1, web, node))
		first.waitUntil(t, "web and node-1 are usable", func(s *Snapshot) bool {
			return usable("web", "agent-1")(s) && usable("node-1", "agent-1")(s)
		})
		first.sync(t)
		first.stop(t) // persists on Stopping

		second := start(t, sys, Config{Store: store})
		s := second.sync(t)
		for _, name := range []string{"web", "node-1"} {
			e, ok := endpoint(s, name, "agent-1")
			if !ok {
				t.Fatalf("%s is not listed after a restart: %s", name, describe(s))
			}
			if e.Online || e.Usable() || e.Tunnel != nil {
				t.Errorf("%s is online after a restart before any TunnelUp: %+v", name, e)
			}
		}
		if e, _ := endpoint(s, "web", "agent-1"); e.Kind != model.KindTCP || e.Labels["env"] != "prod" {
			t.Errorf("got restored web %+v, want kind tcp and label env=prod", e)
		}
		ar, ok := s.Agents["agent-1"]
		if !ok || ar.Online || ar.Hostname != "agent-1.example" {
			t.Errorf("got restored agent %+v (listed %v), want agent-1.example offline", ar, ok)
		}
		for _, sum := range s.List() {
			if sum.Status != "offline" {
				t.Errorf("got %s %s after a restart, want offline", sum.Name, sum.Status)
			}
		}

		// The tunnel from before the restart cannot bring the entries back.
		second.send(hb("agent-1", t1, web, node))
		if e, _ := endpoint(second.sync(t), "web", "agent-1"); e.Online {
			t.Errorf("a heartbeat from a tunnel the new router never saw brought web online: %+v", e)
		}

		t2 := spawnTunnel(t, sys)
		second.send(up("agent-1", t2))
		second.send(hb("agent-1", t2, web, node))
		second.waitUntil(t, "web and node-1 are usable after the agent's tunnel is back", func(s *Snapshot) bool {
			return usable("web", "agent-1")(s) && usable("node-1", "agent-1")(s)
		})
	})
}

func TestNewPropsValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty", Config{}, []string{"ProxyID is required", "Table is required", "HeartbeatTTL and OfflineRetention are required"}},
		{"negative", Config{ProxyID: "p", Table: NewTable(), HeartbeatTTL: time.Second, OfflineRetention: time.Hour, SweepInterval: -time.Second}, []string{"negative"}},
	}
	for _, tt := range tests {
		_, err := NewProps(tt.cfg)
		if err == nil {
			t.Errorf("%s: got nil error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %q, want it to hold %q", tt.name, err, w)
			}
		}
	}
	if _, err := NewProps(Config{ProxyID: "p", Table: NewTable(), HeartbeatTTL: time.Second, OfflineRetention: time.Hour}); err != nil {
		t.Errorf("minimal config: got %v, want nil", err)
	}
}

func openStore(t *testing.T, dir string) *catalog.Store {
	t.Helper()
	s, err := catalog.Open(dir, catalog.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("catalog.Open: %v", err)
	}
	// Registered before the routers, so it runs after they have stopped
	// and persisted.
	t.Cleanup(func() { s.Close() })
	return s
}

func waitStored(t *testing.T, store *catalog.Store, what string, cond func([]model.Resource) bool) {
	t.Helper()
	waitStoredAgents(t, store, what, func(_ []model.Agent, res []model.Resource) bool { return cond(res) })
}

func waitStoredAgents(t *testing.T, store *catalog.Store, what string, cond func([]model.Agent, []model.Resource) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		agents, res, err := store.Load()
		if err != nil {
			t.Fatalf("load catalog: %v", err)
		}
		if cond(agents, res) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s; store holds %d agents, resources %+v", what, len(agents), res)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestMalformedMessageKeepsRoutes checks that a TunnelUp without a tunnel
// (a caller's bug) is dropped without losing the routes the router holds.
// The router must not panic on it: a panic restarts the actor with an empty
// table, so every connected agent silently disappears until it reconnects.
func TestMalformedMessageKeepsRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		t1 := spawnTunnel(t, sys)
		h.send(up("agent-1", t1))
		h.send(hb("agent-1", t1, web))
		v := h.waitUntil(t, "web is usable", usable("web", "agent-1")).Version

		h.send(&TunnelUp{Agent: model.Agent{ID: "agent-2"}})
		h.send(&Heartbeat{AgentID: "agent-1", Resources: []revtunnel.ResourceStatus{db}})
		h.send(&TunnelDown{AgentID: "agent-1"})
		s := h.sync(t)
		if !usable("web", "agent-1")(s) {
			t.Errorf("after a TunnelUp with no tunnel: got %s, want web still usable", describe(s))
		}
		if s.Version < v {
			t.Errorf("snapshot version went back from %d to %d", v, s.Version)
		}
	})
}

// TestGrants: an agent serves only what its grant allows. An unscoped grant
// claims free names and keeps them; a second unscoped agent cannot take a
// claimed name, nor one another agent serves; a scoped grant joins a pool
// but serves nothing outside its globs; grant labels are stamped, and a
// contradicting label is refused. Refusals come back in the verdict.
func TestGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sys := newSystem(t)
		h := start(t, sys, Config{})
		ta, tb, tc := spawnTunnel(t, sys), spawnTunnel(t, sys), spawnTunnel(t, sys)
		node1 := revtunnel.ResourceStatus{Name: "node1", Kind: model.KindSSH, Healthy: true}
		web1 := revtunnel.ResourceStatus{Name: "web-1", Kind: model.KindTCP, Healthy: true, Port: 80}
		unscoped := func(tok string) access.Grant { return access.Grant{Token: tok} }
		beat := func(id string, tun *fakeTunnel, g access.Grant, rs ...revtunnel.ResourceStatus) HeartbeatVerdict {
			t.Helper()
			reply := make(chan HeartbeatVerdict, 1)
			h.send(&Heartbeat{AgentID: id, Tunnel: tun.pid, Grant: g, Resources: rs, Reply: reply})
			select {
			case v := <-reply:
				return v
			case <-time.After(waitFor):
				t.Fatalf("no verdict for %s's heartbeat", id)
			}
			return HeartbeatVerdict{}
		}
		refused := func(v HeartbeatVerdict) []string {
			var out []string
			for _, r := range v.Refused {
				out = append(out, r.Name+": "+r.Reason)
			}
			return out
		}

		h.send(up("agent-a", ta))
		if v := beat("agent-a", ta, unscoped("aaaaaaaaaaaa"), node1); len(v.Refused) > 0 {
			t.Fatalf("the first agent to serve node1 was refused: %v", refused(v))
		}
		s := h.sync(t)
		if c, ok := s.Policy.ClaimOf("node1"); !ok || c.Agent != "agent-a" {
			t.Fatalf("claim on node1: got %+v, %v; want agent-a's", c, ok)
		}

		// An attacker with another unscoped token asks for node1.
		h.send(up("evil", tb))
		v := beat("evil", tb, unscoped("bbbbbbbbbbbb"), node1, web1)
		if got := refused(v); len(got) != 1 || !strings.Contains(got[0], "node1: resource node1 is not this agent's (claimed by agent agent-a)") {
			t.Fatalf("evil's node1: got refusals %q, want node1 refused as agent-a's", got)
		}
		s = h.sync(t)
		if _, ok := endpoint(s, "node1", "evil"); ok {
			t.Fatal("evil serves node1")
		}
		if _, ok := endpoint(s, "web-1", "evil"); !ok {
			t.Fatal("evil's own free name web-1 was not accepted")
		}
		// Once agent-a goes offline, node1 is still its claim.
		h.send(down("agent-a", ta))
		if v := beat("evil", tb, unscoped("bbbbbbbbbbbb"), node1, web1); len(v.Refused) != 1 {
			t.Fatalf("evil took node1 while its owner was offline: refusals %q", refused(v))
		}

		// A scoped grant: joins web-1's pool, cannot serve node1, labels stamped.
		h.send(up("agent-c", tc))
		web := access.Grant{Token: "cccccccccccc", Names: []string{"web-*"}, Labels: map[string]string{"env": "prod"}}
		v = beat("agent-c", tc, web, web1, node1)
		if got := refused(v); len(got) != 1 || !strings.Contains(got[0], "node1: resource node1 is outside this agent's grant (web-*") {
			t.Fatalf("agent-c: got refusals %q, want node1 refused as outside the grant", got)
		}
		s = h.sync(t)
		e, ok := endpoint(s, "web-1", "agent-c")
		if !ok || e.Labels["env"] != "prod" || e.Port != 80 {
			t.Fatalf("agent-c's web-1: got %+v (found %v), want it served with env=prod and port 80", e.Resource, ok)
		}
		liar := web1
		liar.Labels = map[string]string{"env": "dev"}
		if got := refused(beat("agent-c", tc, web, liar)); len(got) != 1 || !strings.Contains(got[0], "contradicts this agent's grant") {
			t.Fatalf("a label against the grant: got refusals %q", got)
		}
	})
}
