package proxy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/storage/audit"
)

// auditor is the proxy's audit log as sessions and tunnels use it: it
// remembers whether the last write failed, so that readiness turns false
// while the log cannot be written (every new session is refused then, and
// a load balancer should send users elsewhere), and probes the log until
// it takes writes again.
type auditor struct {
	log     *audit.Log
	metrics *metrics
	failed  atomic.Bool
	kick    chan struct{} // a write failed: probe soon
}

func newAuditor(l *audit.Log, m *metrics) *auditor {
	return &auditor{log: l, metrics: m, kick: make(chan struct{}, 1)}
}

// Append writes ev durably and records the outcome.
func (a *auditor) Append(ev audit.Event) (audit.Event, error) {
	start := time.Now()
	out, err := a.log.Append(ev)
	a.metrics.auditWrite.Observe(time.Since(start).Seconds())
	if err != nil {
		a.metrics.auditFailures.Inc()
		if !a.failed.Swap(true) {
			select {
			case a.kick <- struct{}{}:
			default:
			}
		}
		return out, err
	}
	a.failed.Store(false)
	return out, nil
}

// probe runs until ctx ends: while the log is failing it tries, every
// interval, to write an "audit.recovered" event, which clears the failure
// (and records in the log itself that it was unwritable for a while).
func (a *auditor) probe(ctx context.Context, interval time.Duration, proxyID string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
		if a.failed.Load() {
			_, _ = a.Append(audit.Event{Type: "audit.recovered", ProxyID: proxyID, Outcome: "ok"})
		}
	}
}

func (p *Proxy) auditOK() bool { return p.auditor != nil && !p.auditor.failed.Load() }
