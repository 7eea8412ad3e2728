package forward

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/membership"
)

func TestProberMeasuresPeersOnceForBothUses(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		asked := 0
		// A peer router that answers after 30ms, and one that never does.
		slow := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			if _, ok := ctx.Message().(*clusterpb.StatusRequest); ok {
				asked++
				sender := ctx.Sender()
				time.AfterFunc(30*time.Millisecond, func() { system.Root.Send(sender, &clusterpb.ProxyStatus{Id: "p2", LocalAgents: 3}) })
			}
		}))
		mute := system.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		pids := map[string]*actor.PID{"addr-p2": slow, "addr-p3": mute}
		members := []membership.Member{
			{Meta: membership.Meta{ProxyID: "p1", PeerAddr: "addr-p1"}, State: membership.Alive},
			{Meta: membership.Meta{ProxyID: "p2", PeerAddr: "addr-p2"}, State: membership.Alive},
			{Meta: membership.Meta{ProxyID: "p3", PeerAddr: "addr-p3"}, State: membership.Alive},
		}
		load := NewLoad()
		p := &Prober{
			System: system, Members: func() []membership.Member { return members }, Self: "p1",
			Router: func(addr string) *actor.PID { return pids[addr] },
			Load:   load, Interval: 2 * time.Second, Timeout: time.Second,
		}
		for _, m := range members[1:] {
			p.ProbeNow(m)
		}
		if got := load.PeerRTT("p2"); got != 30*time.Millisecond {
			t.Errorf("p2's round trip %s, want 30ms", got)
		}
		if load.PeerRTT("p3") != 0 {
			t.Error("a peer that never answered has a round trip")
		}
		// Status within the interval takes the last probe: no second
		// request.
		time.Sleep(time.Second)
		if pr := p.Recent(members[1]); pr.Err != nil || pr.Status.LocalAgents != 3 || asked != 1 {
			t.Errorf("recent probe %+v after %d requests, want the cached answer after 1", pr, asked)
		}
		if pr := p.Recent(members[2]); pr.Err == nil {
			t.Error("the mute peer reads as reachable")
		}
		// Past two intervals it asks again.
		time.Sleep(4 * time.Second)
		p.Recent(members[1])
		if asked != 2 {
			t.Errorf("%d requests, want a fresh probe once the last is stale", asked)
		}
		p.Forget("p2")
		if load.PeerRTT("p2") != 0 {
			t.Error("a peer that left keeps its round trip")
		}
	})
}
