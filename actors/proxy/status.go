package proxy

import (
	"sync"

	"github.com/warren-proxy/warren/actors/forward"
	"github.com/warren-proxy/warren/internal/model"
)

// Status is every member's counts and the health of the peer link to it,
// from the prober's last round (or a probe now, for a member it has not
// heard from lately).
func (p *Proxy) Status() model.Statuses {
	members := p.members.Members()
	out := make(model.Statuses, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		out[i] = model.MemberStatus{ID: m.ProxyID, Region: m.Region, Zone: m.Zone, State: m.State.String(), Version: m.Version,
			UserAddr: m.UserAddr, HTTPAddr: m.HTTPAddr}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pr forward.Probe
			if m.ProxyID == p.cfg.ID {
				pr = p.prober.ProbeNow(m) // our own router: no link to measure
			} else {
				pr = p.prober.Recent(m)
			}
			if pr.Err != nil {
				out[i].Link = "unreachable: " + pr.Err.Error()
				return
			}
			st := pr.Status
			out[i].LocalAgents, out[i].Routes = int(st.LocalAgents), int(st.Routes)
			out[i].HostKey = st.HostKey
			if st.UserAddr != "" {
				out[i].UserAddr = st.UserAddr
			}
			out[i].Link, out[i].RTTMillis = "ok", float64(pr.RTT.Microseconds())/1000
			if m.ProxyID == p.cfg.ID {
				out[i].Link, out[i].RTTMillis = "self", 0
			}
		}()
	}
	wg.Wait()
	return out
}
