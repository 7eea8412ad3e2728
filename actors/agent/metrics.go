package agent

import (
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-proxy/warren/internal/buildinfo"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// metrics are the agent's Prometheus metrics, served at /metrics on
// debug_listen (behind debug_token_file unless metrics_open): its tunnels
// by proxy, how old each proxy's last answered heartbeat is, the health
// of its upstreams, and the sessions it serves. Labels are proxy ids and
// the agent's own resource names, both bounded by configuration.
type metrics struct {
	a   *Agent
	reg *prometheus.Registry

	mu      sync.Mutex
	tunnels map[*revtunnel.ClientConn]*tunnelState
}

// tunnelState is one live tunnel as the metrics see it.
type tunnelState struct {
	proxyID  string
	lastBeat time.Time // the last heartbeat the proxy answered; zero before
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{a: a, reg: prometheus.NewRegistry(), tunnels: map[*revtunnel.ClientConn]*tunnelState{}}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "warren_agent_build_info",
		Help: "Always 1; the labels say which build runs."}, []string{"version", "revision", "goversion"})
	info.WithLabelValues(Version, buildinfo.Revision(), runtime.Version()).Set(1)
	m.reg.MustRegister(info, agentCollector{m},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_agent_recording_spool_bytes",
			Help: "Bytes of session recordings in the spool, waiting for enough proxies to hold them."},
			func() float64 { return float64(a.RecordingSpoolBytes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_agent_recording_upload_failures_total",
			Help: "Recording uploads to a proxy that failed (each is retried)."},
			func() float64 { return float64(a.RecordingUploadFailures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_agent_recording_failures_total",
			Help: "Recordings the node could not write (spool full, disk error): they end with a marker, and sessions under require_recording end."},
			func() float64 { return float64(a.RecordingFailures()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// up, beat and down follow one tunnel's life.
func (m *metrics) up(tun *revtunnel.ClientConn, proxyID string) {
	m.mu.Lock()
	m.tunnels[tun] = &tunnelState{proxyID: proxyID}
	m.mu.Unlock()
}

func (m *metrics) beat(tun *revtunnel.ClientConn, at time.Time) {
	m.mu.Lock()
	if t := m.tunnels[tun]; t != nil {
		t.lastBeat = at
	}
	m.mu.Unlock()
}

func (m *metrics) down(tun *revtunnel.ClientConn) {
	m.mu.Lock()
	delete(m.tunnels, tun)
	m.mu.Unlock()
}

// agentCollector reads the gauges at scrape time.
type agentCollector struct{ m *metrics }

var (
	descAgentTunnels  = prometheus.NewDesc("warren_agent_tunnels", "Live tunnels to each proxy.", []string{"proxy"}, nil)
	descHeartbeatAge  = prometheus.NewDesc("warren_agent_heartbeat_age_seconds", "Time since the proxy last answered a heartbeat over its freshest tunnel (the proxy drops routes whose heartbeats are older than its heartbeat_ttl).", []string{"proxy"}, nil)
	descResourceUp    = prometheus.NewDesc("warren_agent_resource_up", "1 if the resource's upstream passed its last health check, else 0.", []string{"resource", "kind"}, nil)
	descAgentSessions = prometheus.NewDesc("warren_agent_sessions", "Resumable sessions the agent holds (running, or waiting for their proxy to come back).", nil, nil)
)

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgentTunnels, descHeartbeatAge, descResourceUp, descAgentSessions} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.a.cfg.Clock()
	count := map[string]int{}
	freshest := map[string]time.Time{}
	m.mu.Lock()
	for _, t := range m.tunnels {
		count[t.proxyID]++
		if t.lastBeat.After(freshest[t.proxyID]) {
			freshest[t.proxyID] = t.lastBeat
		}
	}
	m.mu.Unlock()
	for proxy, n := range count {
		ch <- prometheus.MustNewConstMetric(descAgentTunnels, prometheus.GaugeValue, float64(n), proxy)
		if at := freshest[proxy]; !at.IsZero() {
			ch <- prometheus.MustNewConstMetric(descHeartbeatAge, prometheus.GaugeValue, now.Sub(at).Seconds(), proxy)
		}
	}
	if m.a.health != nil {
		for _, s := range m.a.health.statuses() {
			up := 0.0
			if s.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descResourceUp, prometheus.GaugeValue, up, s.Name, s.Kind)
		}
	}
	if m.a.held != nil {
		ch <- prometheus.MustNewConstMetric(descAgentSessions, prometheus.GaugeValue, float64(m.a.held.Len()))
	}
}
