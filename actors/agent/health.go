package agent

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// health checks the upstream of every resource and keeps the statuses the
// heartbeats carry. An "ssh" resource is served by the agent itself and is
// healthy while the agent runs; a "tcp" resource is healthy while a TCP
// connect to its address succeeds.
type health struct {
	resources atomic.Pointer[[]ResourceConfig]
	interval  time.Duration
	log       *slog.Logger
	cur       atomic.Pointer[[]revtunnel.ResourceStatus]
	now       chan struct{} // asks run to check at once
}

func newHealth(resources []ResourceConfig, interval time.Duration, log *slog.Logger) *health {
	h := &health{interval: interval, log: log, now: make(chan struct{}, 1)}
	h.resources.Store(&resources)
	h.cur.Store(h.check(context.Background(), 0))
	return h
}

// setResources replaces the resources to check and asks for a check now.
func (h *health) setResources(rs []ResourceConfig) {
	h.resources.Store(&rs)
	select {
	case h.now <- struct{}{}:
	default:
	}
}

// statuses returns the latest statuses.
func (h *health) statuses() []revtunnel.ResourceStatus { return *h.cur.Load() }

// run checks every interval until ctx ends and calls changed when a
// status flips.
func (h *health) run(ctx context.Context, changed func()) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.now:
		}
		next := h.check(ctx, h.interval)
		if !slices.EqualFunc(*h.cur.Load(), *next, sameStatus) {
			h.cur.Store(next)
			for _, s := range *next {
				h.log.Info("resource health", "resource", s.Name, "healthy", s.Healthy, "detail", s.Detail)
			}
			changed()
		}
	}
}

func sameStatus(a, b revtunnel.ResourceStatus) bool {
	return a.Name == b.Name && a.Healthy == b.Healthy && a.Detail == b.Detail
}

func (h *health) check(ctx context.Context, timeout time.Duration) *[]revtunnel.ResourceStatus {
	if timeout <= 0 || timeout > 3*time.Second {
		timeout = 3 * time.Second
	}
	rs := *h.resources.Load()
	out := make([]revtunnel.ResourceStatus, len(rs))
	for i, r := range rs {
		st := revtunnel.ResourceStatus{Name: r.Name, Kind: r.Kind, Labels: r.Labels, Healthy: true}
		if r.Kind == model.KindTCP {
			// The port, for roles that allow ports and for hints.
			if _, port, err := net.SplitHostPort(r.Addr); err == nil {
				st.Port, _ = strconv.Atoi(port)
			}
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, "tcp", r.Addr)
			if err != nil {
				st.Healthy, st.Detail = false, "upstream "+r.Addr+" unreachable: "+err.Error()
			} else {
				c.Close()
			}
		}
		out[i] = st
	}
	return &out
}
