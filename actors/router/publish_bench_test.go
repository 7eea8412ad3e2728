package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
)

// benchRouter is a router (not started as an actor) holding perProxy
// local agents and perProxy agents of each of two peers, one resource
// each: the table of one proxy of the scale benchmark's 3-proxy cluster.
func benchRouter(b *testing.B, perProxy int) *Router {
	b.Helper()
	cfg, err := Config{ProxyID: "proxy-1", Region: "local", Table: NewTable(), HeartbeatTTL: 30 * time.Second, OfflineRetention: 24 * time.Hour}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	r := &Router{cfg: cfg, agents: map[string]*agentState{}, dirty: map[string]bool{}, rttChanged: map[string]bool{}, repl: newReplication()}
	r.loadConfig()
	now := time.Now()
	for i := range perProxy {
		id := fmt.Sprintf("agent-1-%05d", i)
		r.agents[id] = &agentState{
			rec:    model.Agent{ID: id, ProxyID: "proxy-1", Addr: "127.0.0.1:40000", Connected: now, LastSeen: now},
			tunnel: actor.NewPID("127.0.1.1:3021", fmt.Sprintf("$%d", i)),
			resources: map[string]*model.Resource{id: {
				Name: id, AgentID: id, Kind: model.KindTCP, Healthy: true, ProxyID: "proxy-1",
				LastSeen: now, Expires: now.Add(time.Hour),
			}},
			rtt: time.Millisecond,
		}
	}
	for p := 2; p <= 3; p++ {
		origin := fmt.Sprintf("proxy-%d", p)
		r.repl.table.MemberAlive(origin)
		s := &clusterpb.RouteState{Origin: origin, Epoch: 1, Seq: 1}
		for i := range perProxy {
			id := fmt.Sprintf("agent-%d-%05d", p, i)
			s.Agents = append(s.Agents, &clusterpb.AgentRoute{
				AgentId: id, Online: true, TunnelAddress: fmt.Sprintf("127.0.1.%d:3021", p), TunnelId: fmt.Sprintf("$%d", i),
				ConnectedUnixNano: now.UnixNano(), LastSeenUnixNano: now.UnixNano(), Addr: "127.0.0.1:40000", RttMicros: 1000,
				Resources: []*clusterpb.Resource{{Name: id, Kind: model.KindTCP, Healthy: true}},
			})
		}
		if r.repl.table.ApplyState(s) != 1 {
			b.Fatal("state not applied")
		}
	}
	return r
}

// BenchmarkPublish is the cost of one snapshot of the route table, which
// the router rebuilds after every batch of changes.
func BenchmarkPublish(b *testing.B) {
	for _, perProxy := range []int{333, 3333} {
		b.Run(fmt.Sprintf("routes=%d", 3*perProxy), func(b *testing.B) {
			r := benchRouter(b, perProxy)
			b.ReportAllocs()
			for b.Loop() {
				r.publish()
			}
			if got := len(r.cfg.Table.Snapshot().Routes); got != 3*perProxy {
				b.Fatalf("snapshot holds %d routes, want %d", got, 3*perProxy)
			}
		})
	}
}

// BenchmarkList is the cost of one resource listing (`warren ls`, the
// HTTP API) of the same table.
func BenchmarkList(b *testing.B) {
	r := benchRouter(b, 3333)
	r.publish()
	s := r.cfg.Table.Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		if got := len(s.List()); got != 9999 {
			b.Fatalf("listed %d resources, want 9999", got)
		}
	}
}
