package proxy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/actors/usercmd"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/storage/audit"
)

// AuditName is the actor name of every proxy's audit server: peers send it
// an AuditQuery and it answers from this proxy's log.
const AuditName = "audit"

// auditServer answers peers' audit queries from this proxy's log.
type auditServer struct{ p *Proxy }

func (s *auditServer) Receive(ctx actor.Context) {
	if q, ok := ctx.Message().(*clusterpb.AuditQuery); ok {
		ctx.Respond(s.p.localAudit(q))
	}
}

// localAudit runs q on this proxy's log.
func (p *Proxy) localAudit(q *clusterpb.AuditQuery) *clusterpb.AuditResult {
	out := &clusterpb.AuditResult{Proxy: p.cfg.ID}
	limit := int(q.Limit)
	if limit <= 0 || limit > usercmd.MaxAuditLimit {
		limit = usercmd.MaxAuditLimit
	}
	res, err := p.audit.Query(audit.Query{
		Since: time.Unix(0, q.SinceUnixNano), User: q.User, Resource: q.Resource, Limit: limit,
	})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	for _, ev := range res.Events {
		b, _ := json.Marshal(ev)
		out.Events = append(out.Events, b)
	}
	out.Truncated, out.Skipped = res.Truncated, int32(res.Skipped)
	return out
}

// clusterAudit runs q on every live proxy (this one without a round trip)
// and merges the answers newest first, cut to q.Limit. A proxy that does
// not answer is reported, not fatal: the others' records are shown.
func (p *Proxy) clusterAudit(q *clusterpb.AuditQuery) (evs []audit.Event, truncated bool, notes []string) {
	members := p.members.Members()
	results := make([]*clusterpb.AuditResult, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		if m.ProxyID == p.cfg.ID {
			results[i] = p.localAudit(q)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.system.Root.RequestFuture(actor.NewPID(m.PeerAddr, AuditName), q, 10*time.Second).Result()
			r, ok := res.(*clusterpb.AuditResult)
			switch {
			case err != nil:
				r = &clusterpb.AuditResult{Proxy: m.ProxyID, Error: "unreachable: " + err.Error()}
			case !ok:
				r = &clusterpb.AuditResult{Proxy: m.ProxyID, Error: fmt.Sprintf("unexpected answer %T", res)}
			}
			results[i] = r
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r.Error != "" {
			notes = append(notes, fmt.Sprintf("(proxy %s: %s; its records are missing)", r.Proxy, r.Error))
			continue
		}
		if r.Skipped > 0 {
			notes = append(notes, fmt.Sprintf("(proxy %s: skipped %d damaged records)", r.Proxy, r.Skipped))
		}
		truncated = truncated || r.Truncated
		for _, b := range r.Events {
			var ev audit.Event
			if err := json.Unmarshal(b, &ev); err != nil {
				notes = append(notes, fmt.Sprintf("(proxy %s sent a record that does not decode)", r.Proxy))
				continue
			}
			evs = append(evs, ev)
		}
	}
	slices.SortStableFunc(evs, func(a, b audit.Event) int { return b.Time.Compare(a.Time) })
	if len(evs) > int(q.Limit) {
		evs, truncated = evs[:q.Limit], true
	}
	return evs, truncated, notes
}
