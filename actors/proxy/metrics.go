package proxy

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/warren-proxy/warren/actors/session"
	"github.com/warren-proxy/warren/cluster/membership"
	"github.com/warren-proxy/warren/internal/buildinfo"
	"github.com/warren-proxy/warren/internal/model"
)

// metrics are the proxy's Prometheus metrics, served on its HTTP port at
// /metrics (behind the API token unless http.metrics_open). Names follow
// Prometheus' conventions: the warren_ prefix, base units (seconds,
// bytes), _total on counters, and no label whose values grow with users
// or sessions: peers and regions are labels (a cluster has tens), users,
// resources and session ids never are. README's "Metrics" section lists
// them; deploy/grafana/warren.json draws them.
//
// Counters and histograms are updated as things happen (sessions through
// the session.Observer below, the audit log, keepalives); the gauges of
// state the proxy already keeps (tunnels, routes, members, peer links) are
// read when Prometheus scrapes, by collector.
type metrics struct {
	reg *prometheus.Registry

	sessionsStarted *prometheus.CounterVec
	sessionsEnded   *prometheus.CounterVec
	sessionDuration prometheus.Histogram
	sessionBytes    *prometheus.CounterVec
	bytesUp         prometheus.Counter // sessionBytes' two children, for the hot path
	bytesDown       prometheus.Counter
	dialAttempts    *prometheus.CounterVec
	failovers       *prometheus.CounterVec
	connectDuration *prometheus.HistogramVec
	resumes         prometheus.Counter
	resumeStall     prometheus.Histogram
	legRTT          *prometheus.HistogramVec
	decisions       *prometheus.CounterVec
	auditWrite      prometheus.Histogram
	auditFailures   prometheus.Counter
	memberEvents    *prometheus.CounterVec
	tunnelsAccepted *prometheus.CounterVec
	userConnRTT     prometheus.Histogram

	mu   sync.Mutex
	gone map[string][2]string // members whose last event was a leave → {membership.ReasonDead or ReasonLeft, region}
}

// Buckets. Latencies span loopback (tens of µs) to the far side of the
// world and a slow agent (seconds); durations span a command to a day.
var (
	latencyBuckets  = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	durationBuckets = []float64{.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600}
	auditBuckets    = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
)

func newMetrics(p *Proxy) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), gone: map[string][2]string{}}
	f := factory{m.reg}
	m.sessionsStarted = f.counterVec("warren_sessions_started_total",
		"Session requests by result: ok (the session runs), denied (no agent of the resource is one the user may reach), unavailable (unknown resource, no usable agent, or every dial failed), error (the audit log or the user's channel failed).", "result")
	m.sessionsEnded = f.counterVec("warren_sessions_ended_total",
		"Sessions that ran and ended, by outcome: ok, error, or refused (the node refused the login).", "outcome")
	m.sessionDuration = f.histogram("warren_session_duration_seconds", "How long sessions ran, from the request to the end.", durationBuckets)
	m.sessionBytes = f.counterVec("warren_session_bytes_total",
		"Bytes carried by the sessions that entered through this proxy: up from users to resources, down from resources to users.", "direction")
	m.bytesUp, m.bytesDown = m.sessionBytes.WithLabelValues("up"), m.sessionBytes.WithLabelValues("down")
	m.dialAttempts = f.counterVec("warren_dial_attempts_total",
		"Attempts to reach an agent for a new session, by path (local: its tunnel is on this proxy; peer: on another proxy) and result (ok, error).", "path", "result")
	m.failovers = f.counterVec("warren_dial_failovers_total",
		"New sessions that moved on to another agent or path after an attempt failed, by the path they moved to.", "path")
	m.connectDuration = f.histogramVec("warren_session_connect_duration_seconds",
		"Time from a session's request to its stream to the agent, by the path it connected through.", latencyBuckets, "path")
	m.resumes = f.counter("warren_session_resumes_total", "Hops of running sessions replaced after a proxy or link on their path failed (transport/resume).")
	m.resumeStall = f.histogram("warren_session_resume_stall_seconds", "How long a resumed session stalled before its new hop carried bytes.", latencyBuckets)
	m.legRTT = f.histogramVec("warren_session_leg_rtt_seconds",
		"Round trip of each leg of a session's path when it connected: user (user to this proxy, SSH keepalive), peer (this proxy to the peer holding the agent's tunnel), agent (that proxy to the agent, tunnel keepalive).", latencyBuckets, "leg")
	m.decisions = f.counterVec("warren_access_decisions_total",
		"Access decisions by stage (login: a user's certificate and locks; session: a user's roles for a resource; agent: an agent's certificate and locks; agent_name: each name an agent asks to serve, against its join grant) and result (allowed, denied).", "stage", "result")
	m.auditWrite = f.histogram("warren_audit_write_duration_seconds", "Time to write one audit event durably (bbolt, fsync).", auditBuckets)
	m.auditFailures = f.counter("warren_audit_write_failures_total", "Audit events that could not be written; while the log fails the proxy refuses new sessions and is not ready.")
	m.memberEvents = f.counterVec("warren_gossip_member_events_total", "Membership changes seen by gossip: join, update, leave.", "event")
	m.tunnelsAccepted = f.counterVec("warren_agent_tunnel_handshakes_total", "Agent connections by handshake result: ok, or refused (a bad certificate, a lock, a name the agent may not claim, a wrong join token, garbage).", "result")
	m.userConnRTT = f.histogram("warren_user_rtt_seconds", "Round trips of SSH keepalives to connected users (the user leg, measured every 30 s per connection).", latencyBuckets)
	for _, r := range []string{session.StartOK, session.StartDenied, session.StartUnavailable, session.StartError} {
		m.sessionsStarted.WithLabelValues(r)
	}
	for _, o := range []string{session.EndOK, session.EndError, session.EndRefused} {
		m.sessionsEnded.WithLabelValues(o)
	}
	for _, path := range []string{session.PathLocal, session.PathPeer} {
		m.dialAttempts.WithLabelValues(path, "ok")
		m.dialAttempts.WithLabelValues(path, "error")
		m.failovers.WithLabelValues(path)
	}
	for _, stage := range []string{"login", "session", "agent", "agent_name"} {
		m.decisions.WithLabelValues(stage, "allowed")
		m.decisions.WithLabelValues(stage, "denied")
	}
	m.tunnelsAccepted.WithLabelValues("ok")
	m.tunnelsAccepted.WithLabelValues("refused")

	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "warren_build_info",
		Help: "Always 1; the labels say which build runs."}, []string{"version", "revision", "goversion"})
	info.WithLabelValues(Version, buildinfo.Revision(), runtime.Version()).Set(1)
	uploadFailures := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_recording_upload_failures_total",
		Help: "Session recordings agents offered that this proxy refused or could not store (a bad ticket, a malformed cast, a full disk); the agent keeps them and retries."},
		func() float64 { return float64(p.RecordingUploadFailures()) })
	m.reg.MustRegister(info, uploadFailures, stateCollector{p, m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// factory registers metrics as it makes them.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// The session.Observer of every session that enters through the proxy.

func (m *metrics) Decided(allowed bool) { m.decision("session", allowed) }

func (m *metrics) Dialed(path string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.dialAttempts.WithLabelValues(path, result).Inc()
}

func (m *metrics) FailedOver(path string) { m.failovers.WithLabelValues(path).Inc() }
func (m *metrics) Started(result string)  { m.sessionsStarted.WithLabelValues(result).Inc() }

func (m *metrics) Connected(path string, took time.Duration, legs session.Legs) {
	m.connectDuration.WithLabelValues(path).Observe(took.Seconds())
	for _, l := range []struct {
		leg string
		rtt time.Duration
	}{{"user", legs.User}, {"peer", legs.Peer}, {"agent", legs.Agent}} {
		if l.rtt > 0 {
			m.legRTT.WithLabelValues(l.leg).Observe(l.rtt.Seconds())
		}
	}
}

func (m *metrics) Resumed(stalled time.Duration) {
	m.resumes.Inc()
	m.resumeStall.Observe(stalled.Seconds())
}

func (m *metrics) Moved(up, down int64) {
	if up > 0 {
		m.bytesUp.Add(float64(up))
	}
	if down > 0 {
		m.bytesDown.Add(float64(down))
	}
}

func (m *metrics) Ended(outcome string, ran time.Duration) {
	m.sessionsEnded.WithLabelValues(outcome).Inc()
	m.sessionDuration.Observe(ran.Seconds())
}

var _ session.Observer = (*metrics)(nil)

// decision counts one access decision at stage.
func (m *metrics) decision(stage string, allowed bool) {
	result := "denied"
	if allowed {
		result = "allowed"
	}
	m.decisions.WithLabelValues(stage, result).Inc()
}

// memberEvent counts a membership event and remembers who left, and why,
// for warren_gossip_members.
func (m *metrics) memberEvent(ev membership.Event) {
	m.memberEvents.WithLabelValues(ev.Type.String()).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if ev.Type == membership.EventLeave {
		m.gone[ev.Member.ProxyID] = [2]string{ev.Reason, ev.Member.Region}
	} else {
		delete(m.gone, ev.Member.ProxyID)
	}
}

// stateCollector reads the gauges of the proxy's state at scrape time.
type stateCollector struct {
	p *Proxy
	m *metrics
}

var (
	descSessions  = prometheus.NewDesc("warren_sessions", "Sessions running that entered through this proxy.", nil, nil)
	descTunnels   = prometheus.NewDesc("warren_agent_tunnels", "Agent tunnels held by this proxy.", nil, nil)
	descRoutes    = prometheus.NewDesc("warren_routes", "Routes to agents in the cluster's table, by state (online: live tunnel and fresh heartbeat; offline) and via (local: the tunnel is on this proxy; peer: on another).", []string{"state", "via"}, nil)
	descResources = prometheus.NewDesc("warren_resources", "Resources by health: online (an agent can take sessions), unhealthy (agents are connected but fail their health checks), offline (no agent connected).", []string{"status"}, nil)
	descReplicas  = prometheus.NewDesc("warren_resource_agents", "Agents serving resources, summed over resources, by health (healthy: usable now).", []string{"health"}, nil)
	descMembers   = prometheus.NewDesc("warren_gossip_members", "Proxies in the cluster as gossip sees them, by state (alive; dead or left: gone since this proxy started) and region.", []string{"state", "region"}, nil)
	descPeerUp    = prometheus.NewDesc("warren_peer_up", "1 if this proxy's last probe of the peer's router answered, else 0.", []string{"peer", "region"}, nil)
	descPeerRTT   = prometheus.NewDesc("warren_peer_rtt_seconds", "Round trip of the last answered probe to the peer's router (the peer leg).", []string{"peer", "region"}, nil)
	descReady     = prometheus.NewDesc("warren_ready", "1 while the proxy takes new users (/readyz is 200), else 0.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descTunnels, descRoutes, descResources, descReplicas, descMembers, descPeerUp, descPeerRTT, descReady} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descSessions, float64(p.live.Len()))
	p.mu.Lock()
	tunnels := len(p.tunPIDs)
	p.mu.Unlock()
	gauge(descTunnels, float64(tunnels))
	gauge(descReady, b2f(p.table != nil && p.NotReady() == ""))

	if p.table != nil {
		snap := p.table.Snapshot()
		routes := map[[2]string]int{{"online", "local"}: 0, {"online", "peer"}: 0, {"offline", "local"}: 0, {"offline", "peer"}: 0}
		for _, r := range snap.Routes {
			k := [2]string{"offline", "peer"}
			if r.Online {
				k[0] = "online"
			}
			if r.Local {
				k[1] = "local"
			}
			routes[k]++
		}
		for k, n := range routes {
			gauge(descRoutes, float64(n), k[0], k[1])
		}
		status := map[string]int{model.StatusOnline: 0, model.StatusUnhealthy: 0, model.StatusOffline: 0}
		agents, healthy := 0, 0
		for _, s := range snap.List() {
			status[s.Status]++
			agents += s.Agents
			healthy += s.Healthy
		}
		for s, n := range status {
			gauge(descResources, float64(n), s)
		}
		gauge(descReplicas, float64(healthy), "healthy")
		gauge(descReplicas, float64(agents-healthy), "unhealthy")
	}

	if p.members != nil {
		// {state, region} → members; every region seen has all three.
		count := map[[2]string]int{}
		seen := func(region string) {
			for _, st := range []string{"alive", membership.ReasonDead, membership.ReasonLeft} {
				count[[2]string{st, region}] += 0
			}
		}
		members := p.members.Members()
		for _, mem := range members {
			seen(mem.Region)
			count[[2]string{"alive", mem.Region}]++
		}
		c.m.mu.Lock()
		for _, g := range c.m.gone {
			seen(g[1])
			count[g]++
		}
		c.m.mu.Unlock()
		for k, n := range count {
			gauge(descMembers, float64(n), k[0], k[1])
		}
		if p.prober != nil {
			last := p.prober.Last()
			for _, mem := range members {
				if mem.ProxyID == p.cfg.ID {
					continue
				}
				pr, ok := last[mem.ProxyID]
				up := ok && pr.Err == nil
				gauge(descPeerUp, b2f(up), mem.ProxyID, mem.Region)
				if up {
					gauge(descPeerRTT, pr.RTT.Seconds(), mem.ProxyID, mem.Region)
				}
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
