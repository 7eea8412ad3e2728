package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/cluster/membership"
	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/wan"
)

// GossipConfig is the "gossip" scenario: proxies' membership in several
// regions over an emulated WAN with loss and a storm of connections,
// one cluster per variant of the timings, all at once on the same hosts.
type GossipConfig struct {
	Regions   []string
	PerRegion int
	// OneWay is the delay between two regions, Inside between two hosts
	// of one region; Jitter is added to both, Loss applies to every link.
	OneWay, Inside, Jitter time.Duration
	Loss                   float64
	// Storm is how many short TCP connections per second cross regions
	// (from a random host to a random host of another region), each
	// echoing StormBytes.
	Storm, StormBytes int
	// Soak is how long false deaths are counted with nothing killed.
	Soak time.Duration
	// Kills is how many times one proxy is stopped without a leave and
	// restarted; DetectWait bounds the wait for every observer to see it
	// dead.
	Kills      int
	DetectWait time.Duration
	// Variants are the timings compared: a profile ("lan", "wan"), with
	// overrides after slashes: "lan/probe=700ms/timeout=350ms/mult=2/maxmult=1/gossip=100ms",
	// and a name before "=" if wanted: "wan-old=lan/probe=5s/...";
	// "region=lan" adds a pool per region with that profile's timings
	// (membership.Config.RegionBindAddr).
	Variants []string
}

// DefaultGossipConfig is the record's run: 3 regions of 3 proxies,
// 150 ms round trips between regions, 1% loss, 300 connections a second.
func DefaultGossipConfig() GossipConfig {
	return GossipConfig{
		Regions: []string{"us", "eu", "ap"}, PerRegion: 3,
		OneWay: 75 * time.Millisecond, Inside: 500 * time.Microsecond, Loss: 0.01,
		Storm: 300, StormBytes: 512,
		Soak: 10 * time.Minute, Kills: 6, DetectWait: 2 * time.Minute,
		Variants: []string{model.ProfileWAN, RegionPoolVariant},
	}
}

// RegionPoolVariant is what proxies with gossip profile wan run: the wan
// pool of every proxy, and a pool per region with lan's timings.
const RegionPoolVariant = "wan+region=wan/region=lan"

// OldWANVariant is the wan preset before this benchmark: memberlist's
// DefaultWANConfig, but for its GossipNodes (4), TCP timeout (30 s) and
// dead-node timers, which bench gossip does not exercise.
const OldWANVariant = "wan-memberlist=lan/probe=5s/timeout=3s/mult=6/maxmult=6/gossip=500ms/pushpull=60s"

// TinyGossipConfig is the smoke test's: the same network, seconds long.
func TinyGossipConfig() GossipConfig {
	c := DefaultGossipConfig()
	c.Storm, c.Soak, c.Kills, c.DetectWait = 50, 3*time.Second, 1, 30*time.Second
	c.Variants = []string{RegionPoolVariant}
	return c
}

func gossipFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultGossipConfig()
	if tiny {
		c = TinyGossipConfig()
	}
	variants := strings.Join(c.Variants, ",")
	loss := c.Loss * 100
	fs.IntVar(&c.PerRegion, "per-region", c.PerRegion, "proxies per region (3 regions)")
	fs.DurationVar(&c.OneWay, "one-way", c.OneWay, "one-way delay between regions")
	fs.DurationVar(&c.Jitter, "jitter", c.Jitter, "jitter added to every link's delay (uniform)")
	fs.Float64Var(&loss, "loss", loss, "packet loss on every link, percent")
	fs.IntVar(&c.Storm, "storm", c.Storm, "new TCP connections per second between regions during the run")
	fs.DurationVar(&c.Soak, "soak", c.Soak, "how long false deaths are counted before the kills")
	fs.IntVar(&c.Kills, "kills", c.Kills, "proxies stopped without a leave (one at a time) to time detection")
	fs.DurationVar(&c.DetectWait, "detect-wait", c.DetectWait, "how long to wait for every proxy to see a stopped one dead")
	fs.StringVar(&variants, "variants", variants, `timings compared, comma-separated: a gossip profile, with overrides and an optional name, like "try=lan/probe=700ms/timeout=350ms/mult=2/maxmult=1/gossip=100ms"`)
	return func(ctx context.Context, env Env) (Report, error) {
		c.Loss = loss / 100
		c.Variants = strings.Split(variants, ",")
		return RunGossip(ctx, env, c)
	}
}

// parseVariant turns "lan/probe=700ms/mult=2", or the same named
// "NAME=lan/probe=700ms/mult=2", into its name and a Config's timings.
func parseVariant(s string) (string, membership.Config, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, "/")
	name := s
	if n, p, ok := strings.Cut(parts[0], "="); ok {
		name, parts[0] = n, p
	}
	c := membership.Config{Profile: parts[0]}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return "", c, fmt.Errorf("variant %q: %q is not key=value", s, p)
		}
		var err error
		switch k {
		case "probe":
			c.ProbeInterval, err = time.ParseDuration(v)
		case "timeout":
			c.ProbeTimeout, err = time.ParseDuration(v)
		case "gossip":
			c.GossipInterval, err = time.ParseDuration(v)
		case "pushpull":
			c.PushPullInterval, err = time.ParseDuration(v)
		case "mult":
			c.SuspicionMult, err = strconv.Atoi(v)
		case "maxmult":
			c.SuspicionMaxMult, err = strconv.Atoi(v)
		case "region":
			c.RegionProfile = v
			if err = model.CheckProfile(v); err == nil {
				c.RegionBindAddr = "127.0.0.1:0" // a marker: startNode binds it on the host
			}
		default:
			err = errors.New("unknown key (probe, timeout, gossip, pushpull, mult, maxmult, region)")
		}
		if err != nil {
			return "", c, fmt.Errorf("variant %q: %s: %w", s, k, err)
		}
	}
	return name, c, nil
}

// gossipVariant is one cluster of the run: a proxy on every host.
type gossipVariant struct {
	name    string
	tmpl    membership.Config // timings only
	timings string            // as the table prints them
	port    int

	suspects, refutes, refutedDead atomic.Int64 // memberlist's log lines, during the soak

	// Guarded by gossipRun.mu.
	nodes        map[string]*membership.Membership // by host
	killed       map[string]time.Time              // host → when it was stopped
	seen         map[string]time.Duration          // observer → when it saw the stopped proxy dead
	falseForming int
	falseSoak    int
	falseKills   int
	falseList    []string
	same, other  Durations
	undetected   int
	kills        [][]string // the detail table's rows
}

type gossipRun struct {
	cfg      GossipConfig
	env      Env
	n        *wan.Net
	hosts    []wan.Host
	variants []*gossipVariant
	start    time.Time
	phase    atomic.Int32 // forming, soaking or killing
	stalls   *stallWatch

	mu sync.Mutex // guards the variants' fields marked so
}

// RunGossip builds the emulated WAN, starts one membership cluster per
// variant with a proxy on every host, and measures, under a storm of
// connections between regions: false deaths (a proxy declared dead by
// another while it runs) over the soak, then how long every other proxy
// takes to see a proxy that was stopped without leaving as dead, by
// observers in its region and in others.
func RunGossip(ctx context.Context, env Env, c GossipConfig) (Report, error) {
	if c.PerRegion < 1 || len(c.Regions) < 2 || c.Storm < 0 || c.Soak < 0 || c.Kills < 0 || c.Loss < 0 || c.Loss >= 1 || len(c.Variants) == 0 {
		return Report{}, errors.New("gossip: --per-region must be positive, --storm, --soak and --kills not negative, --loss below 100, and --variants not empty")
	}
	r := &gossipRun{cfg: c, env: env, start: time.Now()}
	for i, s := range c.Variants {
		name, tmpl, err := parseVariant(s)
		if err != nil {
			return Report{}, fmt.Errorf("gossip: %w", err)
		}
		full := tmpl // Timings checks a whole Config
		full.Meta.ProxyID, full.Meta.Region, full.BindAddr = "x", "r", "127.0.0.1:0"
		tm, err := full.Timings()
		if err != nil {
			return Report{}, fmt.Errorf("gossip: variant %q: %w", s, err)
		}
		desc := tm.String()
		if tmpl.RegionProfile != "" {
			rt, err := membership.Config{Meta: full.Meta, BindAddr: full.BindAddr, Profile: tmpl.RegionProfile}.Timings()
			if err != nil {
				return Report{}, fmt.Errorf("gossip: variant %q: %w", s, err)
			}
			desc += "; a pool per region: " + rt.String()
		}
		r.variants = append(r.variants, &gossipVariant{name: name, tmpl: tmpl, timings: desc, port: 7946 + i,
			nodes: map[string]*membership.Membership{}, killed: map[string]time.Time{}, seen: map[string]time.Duration{}})
	}
	topo := wan.Topology{
		Inside:  wan.Link{Delay: c.Inside, Jitter: c.Jitter, Loss: c.Loss},
		Default: wan.Link{Delay: c.OneWay, Jitter: c.Jitter, Loss: c.Loss},
	}
	for _, reg := range c.Regions {
		for i := 1; i <= c.PerRegion; i++ {
			topo.Hosts = append(topo.Hosts, wan.Host{Name: fmt.Sprintf("%s-%d", reg, i), Region: reg})
		}
	}
	r.hosts = topo.Hosts
	n, err := wan.New(topo)
	if err != nil {
		return Report{}, fmt.Errorf("gossip: %w (the emulated WAN needs root, iproute2 and /dev/net/tun)", err)
	}
	r.n = n
	defer n.Close()
	r.stalls = watchStalls(r.start)
	defer r.stalls.stop()
	defer r.closeAll()

	env.progress("gossip: starting %d proxies in each of %d variants", len(r.hosts), len(r.variants))
	for _, v := range r.variants {
		for _, h := range r.hosts {
			if err := r.startNode(ctx, v, h); err != nil {
				return Report{}, err
			}
		}
	}
	if err := r.waitAllSee(ctx, time.Minute, ""); err != nil {
		return Report{}, fmt.Errorf("gossip: clusters did not form: %w", err)
	}

	stormCtx, stopStorm := context.WithCancel(ctx)
	storm, err := startStorm(stormCtx, n, r.hosts, c)
	if err != nil {
		stopStorm()
		return Report{}, err
	}
	defer func() { stopStorm(); storm.wait() }()

	r.phase.Store(phaseSoak)
	soakStart := time.Since(r.start)
	env.progress("gossip: soak for %v (false deaths)", c.Soak)
	soakDone := time.After(c.Soak)
	tick := time.NewTicker(30 * time.Second)
soak:
	for {
		select {
		case <-ctx.Done():
			tick.Stop()
			return Report{}, ctx.Err()
		case <-soakDone:
			break soak
		case <-tick.C:
			env.progress("gossip: %v: %s", time.Since(r.start).Round(time.Second), r.status())
		}
	}
	tick.Stop()
	r.phase.Store(phaseKills)
	soakEnd := time.Since(r.start)

	stride := c.PerRegion + 1
	for gcd(stride, len(r.hosts)) != 1 {
		stride++
	}
	for k := range c.Kills {
		h := r.hosts[(k*stride)%len(r.hosts)]
		env.progress("gossip: kill %d of %d: %s", k+1, c.Kills, h.Name)
		if err := r.killAndRestart(ctx, k+1, h); err != nil {
			return Report{}, err
		}
	}
	stopStorm()
	storm.wait()
	return r.report(storm, soakStart, soakEnd), nil
}

// The phases of a run.
const (
	phaseForming = iota
	phaseSoak
	phaseKills
)

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// startNode starts v's proxy on host h, inside h's namespace: its gossip
// sockets are bound there, and its TCP dials are made there too.
func (r *gossipRun) startNode(ctx context.Context, v *gossipVariant, h wan.Host) error {
	cfg := v.tmpl
	addr := r.n.Addr(h.Name).String()
	cfg.Meta = membership.Meta{ProxyID: h.Name, Region: h.Region}
	cfg.BindAddr = net.JoinHostPort(addr, strconv.Itoa(v.port))
	if cfg.RegionBindAddr != "" {
		cfg.RegionBindAddr = net.JoinHostPort(addr, strconv.Itoa(v.port+100))
	}
	for _, reg := range r.cfg.Regions {
		cfg.Seeds = append(cfg.Seeds, net.JoinHostPort(r.n.Addr(reg+"-1").String(), strconv.Itoa(v.port)))
	}
	cfg.SecretKey = []byte("warren-bench-gossip-key-32-bytes")
	cfg.Logger = slog.New(&gossipLogCounter{run: r, v: v})
	cfg.Dial = func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = r.n.Do(h.Name, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	m, err := membership.New(cfg)
	if err != nil {
		return fmt.Errorf("gossip: %s: %w", h.Name, err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.n.Do(h.Name, func() error { return m.Start(startCtx) }); err != nil {
		m.Close()
		return fmt.Errorf("gossip: start %s (%s): %w", h.Name, v.name, err)
	}
	r.mu.Lock()
	v.nodes[h.Name] = m
	r.mu.Unlock()
	go func() {
		for e := range m.Events() {
			r.onEvent(v, h, e, time.Now())
		}
	}()
	return nil
}

// onEvent records a death seen by observer: the detection of a stopped
// proxy, or a false death.
func (r *gossipRun) onEvent(v *gossipVariant, observer wan.Host, e membership.Event, at time.Time) {
	subject := e.Member.ProxyID
	if e.Type != membership.EventLeave || e.Reason != membership.ReasonDead || subject == observer.Name {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if killed, ok := v.killed[subject]; ok { // one at a time
		if _, dup := v.seen[observer.Name]; !dup {
			v.seen[observer.Name] = at.Sub(killed)
		}
		return
	}
	switch r.phase.Load() {
	case phaseForming:
		v.falseForming++
	case phaseSoak:
		v.falseSoak++
	default:
		v.falseKills++
	}
	if len(v.falseList) < 20 {
		v.falseList = append(v.falseList, fmt.Sprintf("%s at %v: %s declared %s dead", v.name, at.Sub(r.start).Round(time.Second), observer.Name, subject))
	}
}

// gossipLogCounter counts memberlist's log lines that tell how close a
// cluster came to false deaths: probes that failed (a suspicion raised)
// and suspicions or deaths refuted by the proxy concerned.
type gossipLogCounter struct {
	run *gossipRun
	v   *gossipVariant
}

func (g *gossipLogCounter) Enabled(context.Context, slog.Level) bool { return true }

func (g *gossipLogCounter) Handle(_ context.Context, rec slog.Record) error {
	if g.run.phase.Load() != phaseSoak {
		return nil
	}
	switch m := rec.Message; {
	case strings.HasPrefix(m, "memberlist: Suspect "):
		g.v.suspects.Add(1)
	case strings.HasPrefix(m, "memberlist: Refuting a suspect"):
		g.v.refutes.Add(1)
	case strings.HasPrefix(m, "memberlist: Refuting a dead"):
		g.v.refutedDead.Add(1)
	}
	return nil
}

func (g *gossipLogCounter) WithAttrs([]slog.Attr) slog.Handler { return g }
func (g *gossipLogCounter) WithGroup(string) slog.Handler      { return g }

// waitAllSee waits until every running proxy of every variant lists
// every host except skip, and the proxies on skip list every host.
func (r *gossipRun) waitAllSee(ctx context.Context, timeout time.Duration, skip string) error {
	want := len(r.hosts)
	return waitUntil(ctx, timeout, 100*time.Millisecond, "every proxy sees all the others", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, v := range r.variants {
			for h, m := range v.nodes {
				if _, down := v.killed[h]; down && h != skip {
					continue
				}
				if len(m.Members()) != want {
					return false
				}
			}
		}
		return true
	})
}

func (r *gossipRun) status() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, v := range r.variants {
		parts = append(parts, fmt.Sprintf("%s: %d false deaths, %d suspicions", v.name, v.falseSoak, v.suspects.Load()))
	}
	return strings.Join(parts, "; ")
}

// killAndRestart stops h's proxy in every variant at once without a
// leave, waits until every other proxy saw it dead (or DetectWait), and
// starts it again.
func (r *gossipRun) killAndRestart(ctx context.Context, k int, h wan.Host) error {
	var wg sync.WaitGroup
	for _, v := range r.variants {
		r.mu.Lock()
		m := v.nodes[h.Name]
		v.killed[h.Name] = time.Now()
		r.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Close()
		}()
	}
	wg.Wait()
	observers := len(r.hosts) - 1
	err := waitUntil(ctx, r.cfg.DetectWait, 50*time.Millisecond, "every proxy sees the stopped one dead", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, v := range r.variants {
			if len(v.seen) < observers {
				return false
			}
		}
		return true
	})
	if ctx.Err() != nil {
		return err
	}
	r.mu.Lock()
	for _, v := range r.variants {
		var same, other Durations
		for obs, d := range v.seen {
			if r.hostRegion(obs) == h.Region {
				same = append(same, d)
			} else {
				other = append(other, d)
			}
		}
		v.same = append(v.same, same...)
		v.other = append(v.other, other...)
		all := append(slices.Clone(same), other...)
		missing := observers - len(all)
		v.undetected += missing
		v.kills = append(v.kills, []string{v.name, strconv.Itoa(k), h.Name, secs(all.Quantile(0), len(all) > 0),
			secs(same.Quantile(1), len(same) > 0), secs(other.Quantile(1), len(other) > 0), strconv.Itoa(missing)})
	}
	r.mu.Unlock()

	for _, v := range r.variants {
		if err := r.startNode(ctx, v, h); err != nil {
			return err
		}
	}
	if err := r.waitAllSee(ctx, time.Minute, h.Name); err != nil {
		return fmt.Errorf("gossip: %s did not rejoin: %w", h.Name, err)
	}
	r.mu.Lock()
	for _, v := range r.variants {
		delete(v.killed, h.Name)
		clear(v.seen)
	}
	r.mu.Unlock()
	return nil
}

func (r *gossipRun) hostRegion(name string) string {
	for _, h := range r.hosts {
		if h.Name == name {
			return h.Region
		}
	}
	return ""
}

func (r *gossipRun) closeAll() {
	r.mu.Lock()
	var all []*membership.Membership
	for _, v := range r.variants {
		for h, m := range v.nodes {
			if _, down := v.killed[h]; !down {
				all = append(all, m)
			}
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range all {
		wg.Add(1)
		go func() { defer wg.Done(); m.Close() }()
	}
	wg.Wait()
}

// secs formats a detection time in seconds, "-" when there is none.
func secs(d time.Duration, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func (r *gossipRun) report(st *stormStats, soakStart, soakEnd time.Duration) Report {
	c := r.cfg
	sum := Table{Name: "gossip", Title: "Gossip across regions: false deaths and detection, one cluster per variant, side by side",
		Header: []string{"variant", "timings", "false deaths (soak)", "false deaths (kills)", "suspicions raised (soak)", "refuted (soak)",
			"detected, same region p50", "same region max", "other regions p50", "other regions max", "not detected"}}
	det := Table{Name: "gossip-kills", Title: "Every kill: when the first and the last proxies of each kind saw it dead",
		Header: []string{"variant", "kill", "proxy stopped", "first", "last, same region", "last, other regions", "not detected"}}
	var falses []string
	r.mu.Lock()
	for _, v := range r.variants {
		sum.Rows = append(sum.Rows, []string{v.name, v.timings, strconv.Itoa(v.falseSoak), strconv.Itoa(v.falseKills),
			strconv.FormatInt(v.suspects.Load(), 10), strconv.FormatInt(v.refutes.Load()+v.refutedDead.Load(), 10),
			secs(v.same.Median(), len(v.same) > 0), secs(v.same.Quantile(1), len(v.same) > 0),
			secs(v.other.Median(), len(v.other) > 0), secs(v.other.Quantile(1), len(v.other) > 0), strconv.Itoa(v.undetected)})
		det.Rows = append(det.Rows, v.kills...)
		falses = append(falses, v.falseList...)
		if v.falseForming > 0 {
			falses = append(falses, fmt.Sprintf("%s: %d while the clusters formed", v.name, v.falseForming))
		}
	}
	r.mu.Unlock()
	sum.Notes = append(sum.Notes,
		fmt.Sprintf("%d regions × %d proxies (real cluster/membership instances, one per host and variant, each in its host's network namespace of the emulated WAN, gossip encrypted): %v one way between regions (%v round trip), %v inside a region, jitter %v, %.1f%% loss on every link, both ways. All variants run at once on the same hosts and network, each its own cluster on its own port.",
			len(c.Regions), c.PerRegion, c.OneWay, 2*c.OneWay, c.Inside, c.Jitter, c.Loss*100),
		fmt.Sprintf("Storm throughout: %s", st.summary()),
		fmt.Sprintf("False deaths: every EventLeave \"dead\" one proxy raised about another that was running (soak: %v with nothing stopped, from %v to %v into the run; kills: while the kills below ran). One proxy declared dead by all 8 others counts 8. Suspicions raised: probes that failed (direct, indirect and TCP fallback), each of which makes the probed proxy a suspect that must refute in time; refuted: suspicions and deaths the suspect refuted.", c.Soak, soakStart.Round(time.Second), soakEnd.Round(time.Second)),
		fmt.Sprintf("Detection: %d times one proxy (a different host each time, regions in turn) was closed without leaving, in every variant at the same moment; the time until each other proxy saw it dead, split by observers in its region and in the others; not detected: observers that had not within %v. Then it was restarted and rejoined before the next.", c.Kills, c.DetectWait))
	sum.Notes = append(sum.Notes, r.stalls.summary())
	if len(falses) > 0 {
		sum.Notes = append(sum.Notes, "False deaths (first 20 per variant): "+strings.Join(falses, "; ")+".")
	}
	drops := r.n.Dropped()
	sum.Notes = append(sum.Notes, fmt.Sprintf("Packets dropped by the emulator: %d by loss, %d other.", drops["loss"], drops["queue"]+drops["device"]+drops["unknown destination"]))
	tabs := []Table{sum}
	if len(det.Rows) > 0 {
		tabs = append(tabs, det)
	}
	return Report{Scenario: "gossip", Tables: tabs}
}

// stormStats counts the storm's connections.
type stormStats struct {
	wg             sync.WaitGroup
	start          time.Time
	mu             sync.Mutex // guards the fields below
	ok, failed     int
	connect        Durations
	end            time.Time
	rate           int
	lns            []net.Listener
	serving        sync.WaitGroup
	firstErr       error
	perHost, bytes int
}

func (s *stormStats) wait() {
	s.wg.Wait()
	s.mu.Lock()
	if s.end.IsZero() {
		s.end = time.Now()
	}
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	s.serving.Wait()
}

func (s *stormStats) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rate == 0 {
		return "none."
	}
	el := s.end.Sub(s.start).Seconds()
	txt := fmt.Sprintf("%d connections a second asked for, %.0f made (%d echoed, %d failed: lost SYNs give up after 5 s), each from a random host to a random host of another region, echoing %d bytes, from %d dialers per host; connect p50 %s, p99 %s.",
		s.rate, float64(s.ok+s.failed)/el, s.ok, s.failed, s.bytes, s.perHost, ms(s.connect.Median()), ms(s.connect.Quantile(0.99)))
	if s.firstErr != nil {
		txt += " First failure: " + s.firstErr.Error() + "."
	}
	return txt
}

// startStorm serves echo on every host and dials c.Storm connections a
// second between regions until ctx ends. A dial is made inside its
// host's namespace, so each dialer is a goroutine locked there.
func startStorm(ctx context.Context, n *wan.Net, hosts []wan.Host, c GossipConfig) (*stormStats, error) {
	s := &stormStats{rate: c.Storm, bytes: c.StormBytes, start: time.Now()}
	if c.Storm == 0 {
		return s, nil
	}
	for _, h := range hosts {
		var ln net.Listener
		if err := n.Do(h.Name, func() (err error) {
			ln, err = net.Listen("tcp", n.Addr(h.Name).String()+":7")
			return err
		}); err != nil {
			s.wait()
			return nil, fmt.Errorf("gossip: storm server on %s: %w", h.Name, err)
		}
		s.lns = append(s.lns, ln)
		s.serving.Add(1)
		go func() { defer s.serving.Done(); echo.Serve(ln, nil) }()
	}
	// A dial takes a round trip; enough dialers that the rate is met
	// with two thirds of them waiting (a lost SYN holds one for a second).
	s.perHost = max(2, int(float64(c.Storm)*(2*c.OneWay+50*time.Millisecond).Seconds()*3/float64(len(hosts)))+2)
	tick := time.NewTicker(time.Second / time.Duration(c.Storm))
	msg := make([]byte, c.StormBytes)
	for _, h := range hosts {
		var others []string
		for _, o := range hosts {
			if o.Region != h.Region {
				others = append(others, n.Addr(o.Name).String()+":7")
			}
		}
		for range s.perHost {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_ = n.Do(h.Name, func() error {
					for {
						select {
						case <-ctx.Done():
							return nil
						case <-tick.C:
						}
						t0 := time.Now()
						d := net.Dialer{Timeout: 5 * time.Second}
						conn, err := d.DialContext(ctx, "tcp", others[rand.IntN(len(others))])
						if err != nil {
							s.record(ctx, 0, err)
							continue
						}
						connect := time.Since(t0)
						s.wg.Add(1)
						go func() {
							defer s.wg.Done()
							defer conn.Close()
							conn.SetDeadline(time.Now().Add(10 * time.Second))
							_, err := conn.Write(msg)
							if err == nil {
								_, err = io.ReadFull(conn, make([]byte, len(msg)))
							}
							s.record(ctx, connect, err)
						}()
					}
				})
			}()
		}
	}
	go func() { <-ctx.Done(); tick.Stop() }()
	return s, nil
}

func (s *stormStats) record(ctx context.Context, connect time.Duration, err error) {
	if ctx.Err() != nil {
		return // cut short by the end of the run
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed++
		if s.firstErr == nil {
			s.firstErr = err
		}
		return
	}
	s.ok++
	s.connect = append(s.connect, connect)
}

// stallWatch notices when this process's timers fire late: a pause of
// the whole process (or the machine) that every proxy and the emulator
// share, which no gossip timing can tell from a network outage.
type stallWatch struct {
	start time.Time
	quit  chan struct{}
	done  chan struct{}

	mu    sync.Mutex // guards the fields below
	worst time.Duration
	at    time.Duration
	long  []string // pauses over 500 ms
}

const stallTick = 50 * time.Millisecond

func watchStalls(start time.Time) *stallWatch {
	w := &stallWatch{start: start, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(stallTick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-w.quit:
				return
			case now := <-t.C:
				late := now.Sub(last) - stallTick
				last = now
				if late < 100*time.Millisecond {
					continue
				}
				w.mu.Lock()
				if late > w.worst {
					w.worst, w.at = late, now.Sub(w.start)
				}
				if late > 500*time.Millisecond && len(w.long) < 20 {
					w.long = append(w.long, fmt.Sprintf("%v at %v", late.Round(10*time.Millisecond), now.Sub(w.start).Round(time.Second)))
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *stallWatch) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

func (w *stallWatch) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	txt := fmt.Sprintf("Stalls of this process (a %v ticker firing late): the worst %v, %v into the run", stallTick, w.worst.Round(time.Millisecond), w.at.Round(time.Second))
	if len(w.long) > 0 {
		txt += "; over 500 ms: " + strings.Join(w.long, ", ")
	}
	return txt + "."
}
