package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
)

// Status asks every member's router for its counts over the peer link;
// the round trip is the link's health.
func (p *Proxy) Status() model.Statuses {
	members := p.members.Members()
	out := make(model.Statuses, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		out[i] = model.MemberStatus{ID: m.ProxyID, Region: m.Region, Zone: m.Zone, State: m.State.String(), Version: m.Version}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			res, err := p.system.Root.RequestFuture(actor.NewPID(m.PeerAddr, router.RouterName), &clusterpb.StatusRequest{}, 3*time.Second).Result()
			rtt := time.Since(start)
			st, ok := res.(*clusterpb.ProxyStatus)
			switch {
			case err != nil:
				out[i].Link = "unreachable: " + err.Error()
			case !ok:
				out[i].Link = fmt.Sprintf("unexpected answer %T", res)
			default:
				out[i].LocalAgents, out[i].Routes = int(st.LocalAgents), int(st.Routes)
				out[i].HostKey, out[i].UserAddr = st.HostKey, st.UserAddr
				out[i].Link, out[i].RTTMillis = "ok", float64(rtt.Microseconds())/1000
				if m.ProxyID == p.cfg.ID {
					out[i].Link, out[i].RTTMillis = "self", 0
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// WriteStatus prints member statuses as a table or JSON.
func WriteStatus(w io.Writer, sts model.Statuses, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(w).Encode(sts)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tREGION\tZONE\tSTATE\tAGENTS\tROUTES\tPEER LINK")
	for _, s := range sts {
		link := s.Link
		if s.Link == "ok" {
			link = fmt.Sprintf("ok (%.2f ms)", s.RTTMillis)
		}
		agents, routes := fmt.Sprint(s.LocalAgents), fmt.Sprint(s.Routes)
		if s.Redacted {
			agents, routes = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Region, dash(s.Zone), s.State, agents, routes, link)
	}
	tw.Flush()
}
