package clustertest

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// BenchmarkRouteConvergence measures how long a route change on one proxy
// takes to be visible on the two others of a 3-proxy cluster: b.N tunnels
// come up (TunnelUp + heartbeat into proxy-1's router) and go down again;
// it reports the p50 and p99 of both, until every other proxy's snapshot
// shows the change.
func BenchmarkRouteConvergence(b *testing.B) {
	c := New(b, Options{Proxies: 3, Runner: RunInProcess})
	origin, others := c.Proxies[0], c.Proxies[1:]
	sys := origin.In.ActorSystem()
	tun := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	defer sys.Root.Stop(tun)
	usableEverywhere := func(name string, want bool) {
		for {
			ok := true
			for _, p := range others {
				if p.Routable(name) != want {
					ok = false
				}
			}
			if ok {
				return
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	var ups, downs []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id, name := fmt.Sprintf("bench-%d", i), fmt.Sprintf("res-%d", i)
		start := time.Now()
		sys.Root.Send(origin.In.Router(), &router.TunnelUp{Agent: model.Agent{ID: id, Connected: start}, Tunnel: tun})
		sys.Root.Send(origin.In.Router(), &router.Heartbeat{AgentID: id, Tunnel: tun, Resources: []revtunnel.ResourceStatus{{Name: name, Kind: "tcp", Healthy: true}}})
		usableEverywhere(name, true)
		ups = append(ups, time.Since(start))
		start = time.Now()
		sys.Root.Send(origin.In.Router(), &router.TunnelDown{AgentID: id, Tunnel: tun})
		usableEverywhere(name, false)
		downs = append(downs, time.Since(start))
	}
	b.StopTimer()
	report := func(label string, d []time.Duration) {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), label+"-p50-µs")
		b.ReportMetric(float64(d[(len(d)*99)/100].Microseconds()), label+"-p99-µs")
	}
	report("up", ups)
	report("down", downs)
}
