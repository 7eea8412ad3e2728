package proxy

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

// httpView is the proxy as its HTTP API (actors/httpapi) sees it.
type httpView struct{ p *Proxy }

func (v httpView) ID() string                             { return v.p.cfg.ID }
func (v httpView) Region() string                         { return v.p.cfg.Region }
func (v httpView) NotReady() string                       { return v.p.NotReady() }
func (v httpView) Snapshot() *router.Snapshot             { return v.p.table.Snapshot() }
func (v httpView) Status() model.Statuses                 { return v.p.Status() }
func (v httpView) Sessions() []model.LiveSession          { return v.p.live.Sessions() }
func (v httpView) Failovers() []model.Failover            { return v.p.live.Failovers() }
func (v httpView) CheckAPIToken(tok string) bool          { return v.p.auth.CheckAPIToken(tok) }
func (v httpView) APITokenMAC(msg []byte) ([]byte, error) { return v.p.auth.APITokenMAC(msg) }
func (v httpView) Metrics() http.Handler {
	return promhttp.HandlerFor(v.p.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(v.p.log.Handler(), slog.LevelError)})
}
func (v httpView) MetricsOpen() bool { return v.p.cfg.HTTP.MetricsOpen }
