package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
)

// ScaleConfig shapes the scale scenario: for each agent count, a fresh
// 3-proxy cluster and that many real agents, each with its own tunnel.
type ScaleConfig struct {
	// Agents are the agent counts, measured in order on a fresh cluster
	// each; the run stops at the first count the machine does not hold.
	Agents []int
	// PerFleet is how many agents one fleet process hosts (a process may
	// hold 20,000 open files here; an agent holds two).
	PerFleet int
	// Concurrency is how many agents start (join) at once, over all
	// fleets; each fleet gets its share.
	Concurrency int
	// Heartbeat is the agents' heartbeat interval (the agent default, 5 s).
	Heartbeat time.Duration
	// Health is the agents' upstream health check interval. It loads the
	// fleets and the echo server, not the proxies (a check that does not
	// change the health sends nothing), so it is long by default.
	Health time.Duration
	// ConnectTimeout bounds the wait for every tunnel and every route;
	// the wait for tunnels also ends when their number has not grown for
	// a third of it.
	ConnectTimeout time.Duration
	// Settle is the pause between convergence and the steady window.
	Settle time.Duration
	// Window is the steady window over which CPU is measured.
	Window time.Duration
	// Probes is how many agents are killed and restarted per round to time
	// route convergence one agent at a time; Rounds is how many rounds.
	Probes, Rounds int
}

// DefaultScaleConfig is the full run; TinyScaleConfig only checks it works.
//
// The counts stop at 15,000, the most this 2-core machine held while
// other benchmarks shared it: at 20,000 every tunnel came up, but the
// connection storm starved the proxies long enough for gossip to declare
// them dead again and again, and routes did not settle within
// ConnectTimeout. Try more with --agents.
func DefaultScaleConfig() ScaleConfig {
	return ScaleConfig{
		Agents:         []int{1000, 5000, 10000, 15000},
		PerFleet:       2500,
		Concurrency:    64,
		Heartbeat:      5 * time.Second,
		Health:         time.Minute,
		ConnectTimeout: 3 * time.Minute,
		Settle:         5 * time.Second,
		Window:         20 * time.Second,
		Probes:         50,
		Rounds:         2,
	}
}

func TinyScaleConfig() ScaleConfig {
	c := DefaultScaleConfig()
	c.Agents = []int{60}
	c.PerFleet = 30
	c.ConnectTimeout = time.Minute
	c.Settle = time.Second
	c.Window = 3 * time.Second
	c.Probes = 6
	c.Rounds = 1
	return c
}

// Validate reports every problem with c at once.
func (c ScaleConfig) Validate() error {
	var errs []error
	if len(c.Agents) == 0 {
		errs = append(errs, errors.New("--agents: name at least one agent count"))
	}
	for _, n := range c.Agents {
		if n < 3 {
			errs = append(errs, fmt.Errorf("--agents: %d is too few; each of the 3 proxies needs an agent", n))
		}
	}
	if c.PerFleet < 1 || c.PerFleet > 8000 {
		errs = append(errs, fmt.Errorf("--per-fleet %d: use 1 to 8000 (a process may open 20,000 files; an agent holds two)", c.PerFleet))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency %d: need at least 1", c.Concurrency))
	}
	if c.Heartbeat <= 0 || c.Health <= 0 || c.ConnectTimeout <= 0 || c.Window <= 0 || c.Settle < 0 {
		errs = append(errs, errors.New("--heartbeat, --health, --connect-timeout and --window must be positive, --settle not negative"))
	}
	if c.Probes < 1 || c.Rounds < 1 {
		errs = append(errs, errors.New("--probes and --rounds must be at least 1"))
	}
	return errors.Join(errs...)
}

// ScaleRun is what one agent count measured.
type ScaleRun struct {
	Agents int
	// Connected is the number of tunnels up when the connect phase ended
	// (the sum of local agents over the proxies); Held says it reached
	// Agents and every proxy listed every route.
	Connected int
	Held      bool
	// Why says what did not hold, if anything.
	Why string
	// FailedStarts counts agents whose Start failed (join refused, …).
	FailedStarts int
	// ConnectAll is from starting the fleets until Connected == Agents.
	ConnectAll time.Duration
	// RoutesAll is from ConnectAll's end until every proxy lists every
	// agent's resource as healthy.
	RoutesAll time.Duration
	// RouteUp and RouteDown are per-agent convergence samples: from a
	// probe agent's tunnel coming up (going away) until every proxy lists
	// its resource as healthy (as not).
	RouteUp, RouteDown Durations
	// PollEvery is the mean interval between two polls of one proxy while
	// probing: the resolution of RouteUp and RouteDown.
	PollEvery time.Duration
	Proxies   []ScaleProxy
	// FleetCPU is the fleets' CPU over the steady window, % of one core;
	// FleetRSS their summed resident memory at its end.
	FleetCPU float64
	FleetRSS int64
}

// ScaleProxy is one proxy of a ScaleRun.
type ScaleProxy struct {
	ID      string
	Tunnels int   // local agents at the end of the steady window
	BaseRSS int64 // before any agent
	RSS     int64 // at the end of the steady window
	PeakRSS int64
	CPU     float64 // over the steady window, % of one core
}

// RSSPerTunnel is the memory the proxy's tunnels added, per tunnel.
func (p ScaleProxy) RSSPerTunnel() float64 {
	if p.Tunnels == 0 {
		return 0
	}
	return float64(p.RSS-p.BaseRSS) / float64(p.Tunnels)
}

// RunScale measures each agent count of cfg on a fresh cluster and
// reports them.
func RunScale(ctx context.Context, env Env, cfg ScaleConfig) (Report, error) {
	runs, err := measureScale(ctx, env, cfg)
	if err != nil {
		return Report{}, err
	}
	return scaleReport(cfg, runs), nil
}

// measureScale runs every agent count until one does not hold.
func measureScale(ctx context.Context, env Env, cfg ScaleConfig) ([]ScaleRun, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scale: %w", err)
	}
	var runs []ScaleRun
	for _, n := range cfg.Agents {
		start := time.Now()
		run, err := scaleOnce(ctx, env, cfg, n)
		if err != nil {
			return runs, fmt.Errorf("scale, %d agents: %w", n, err)
		}
		runs = append(runs, run)
		env.progress("scale: %d agents done in %s", n, time.Since(start).Round(time.Second))
		if !run.Held {
			env.progress("scale: %d agents did not hold (%s); not trying more", n, run.Why)
			break
		}
	}
	return runs, nil
}

// scaleBed is one agent count's cluster, echo upstream and fleets.
type scaleBed struct {
	env     Env
	cfg     ScaleConfig
	dir     string
	n       int
	cluster *Cluster
	echo    string
	fleets  []*Proc
	// The last probes agents run in a fleet of their own, which is killed
	// and restarted to time one agent's route convergence.
	probe      *Proc
	probeFirst int
	probeRound int
	stop       cleanups
}

func scaleOnce(ctx context.Context, env Env, cfg ScaleConfig, n int) (run ScaleRun, err error) {
	run = ScaleRun{Agents: n}
	dir, err := env.scratch(fmt.Sprintf("scale-%d", n))
	if err != nil {
		return run, err
	}
	b := &scaleBed{env: env, cfg: cfg, dir: dir, n: n}
	defer b.close()
	env.progress("scale: %d agents: starting a 3-proxy cluster in %s", n, dir)
	if b.cluster, err = StartCluster(ctx, env, dir, ClusterConfig{Proxies: 3}); err != nil {
		return run, err
	}
	b.stop.add(b.cluster.Close)
	if b.echo, err = echoServer("127.0.0.1", &b.stop); err != nil {
		return run, err
	}
	// Let gossip and the peer links settle before the baseline.
	if !sleepCtx(ctx, 2*time.Second) {
		return run, ctx.Err()
	}
	base := make([]int64, len(b.cluster.Proxies))
	for i, p := range b.cluster.Proxies {
		if base[i], err = p.Proc.RSS(); err != nil {
			return run, fmt.Errorf("%s: read RSS: %w", p.ID, err)
		}
	}

	// Connect: every fleet at once.
	start := time.Now()
	if err := b.startFleets(); err != nil {
		return run, err
	}
	env.progress("scale: %d agents: %d fleet processes started", n, len(b.fleets)+1)
	run.Connected, err = b.waitConnected(ctx, start)
	run.FailedStarts = b.failedStarts()
	if err != nil {
		run.Why = err.Error()
		return run, nil
	}
	run.ConnectAll = time.Since(start)
	env.progress("scale: %d agents: all tunnels up after %s; waiting for every route on every proxy", n, run.ConnectAll.Round(time.Millisecond))
	allUp := time.Now()
	if err := b.waitRoutes(ctx); err != nil {
		run.Why = err.Error()
		return run, nil
	}
	run.RoutesAll = time.Since(allUp)
	env.progress("scale: %d agents: every proxy lists every route %s after the last tunnel came up", n, run.RoutesAll.Round(time.Millisecond))

	// Steady state: heartbeats and keepalives only.
	if !sleepCtx(ctx, cfg.Settle) {
		return run, ctx.Err()
	}
	env.progress("scale: %d agents: measuring CPU over a %s steady window", n, cfg.Window)
	if err := b.steady(ctx, &run, base); err != nil {
		return run, err
	}

	// One agent at a time: kill and restart the probe fleet.
	for r := range cfg.Rounds {
		env.progress("scale: %d agents: probe round %d of %d: %d agents down and up again", n, r+1, cfg.Rounds, b.n-b.probeFirst)
		down, up, poll, err := b.probeRoundTrip(ctx)
		if err != nil {
			run.Why = err.Error()
			return run, nil
		}
		run.RouteDown = append(run.RouteDown, down...)
		run.RouteUp = append(run.RouteUp, up...)
		run.PollEvery = max(run.PollEvery, poll)
	}
	run.Held = true
	return run, nil
}

// close stops the fleets (in parallel, they take a while to close their
// agents), then the cluster and the echo server.
func (b *scaleBed) close() {
	var wg sync.WaitGroup
	for _, p := range append(slices.Clone(b.fleets), b.probe) {
		if p == nil || p.Exited() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop()
		}()
	}
	wg.Wait()
	b.stop.run()
}

// fleetArgs are the `warren bench fleet` arguments for agents
// [first, first+count).
func (b *scaleBed) fleetArgs(first, count int, events bool) []string {
	fleets := (b.probeFirst+b.cfg.PerFleet-1)/b.cfg.PerFleet + 1
	concurrency := max(1, (b.cfg.Concurrency+fleets-1)/fleets)
	var tunnels []string
	for _, p := range b.cluster.Proxies {
		tunnels = append(tunnels, p.Tunnel)
	}
	args := []string{"bench", "fleet",
		"--agents", strconv.Itoa(count), "--offset", strconv.Itoa(first), "--prefix", "scale",
		"--proxies", strings.Join(tunnels, ","), "--token", b.cluster.Token, "--ca-pin", b.cluster.Pin,
		"--upstream", b.echo, "--data", filepath.Join(b.dir, "agents"),
		"--heartbeat", b.cfg.Heartbeat.String(), "--health", b.cfg.Health.String(),
		"--concurrency", strconv.Itoa(concurrency),
	}
	if events {
		args = append(args, "--events", "--watch", "2ms")
	}
	return args
}

// startFleets starts the fleets of the bulk of the agents and the probe
// fleet.
func (b *scaleBed) startFleets() error {
	probes := min(b.cfg.Probes, max(1, b.n/10))
	b.probeFirst = b.n - probes
	for first := 0; first < b.probeFirst; first += b.cfg.PerFleet {
		count := min(b.cfg.PerFleet, b.probeFirst-first)
		name := fmt.Sprintf("fleet-%d", len(b.fleets)+1)
		p, err := startProc(name, filepath.Join(b.dir, name+".log"), b.env.Binary, b.fleetArgs(first, count, false)...)
		if err != nil {
			return err
		}
		b.fleets = append(b.fleets, p)
	}
	return b.startProbe()
}

// startProbe starts the probe fleet (again).
func (b *scaleBed) startProbe() error {
	b.probeRound++
	name := fmt.Sprintf("probe-%d", b.probeRound)
	p, err := startProc(name, filepath.Join(b.dir, name+".log"), b.env.Binary, b.fleetArgs(b.probeFirst, b.n-b.probeFirst, true)...)
	if err != nil {
		return err
	}
	b.probe = p
	return nil
}

// exited returns the failure of a fleet that ended early, if any.
func (b *scaleBed) exited() error {
	for _, p := range append(slices.Clone(b.fleets), b.probe) {
		if p != nil && p.Exited() {
			return p.Failure()
		}
	}
	return nil
}

// tunnels returns the local agents of every proxy, each asked for its
// own (so a slow peer link does not hide the others), in parallel.
func (b *scaleBed) tunnels() (map[string]int, error) {
	proxies := b.cluster.Proxies
	counts := make([]int, len(proxies))
	errs := make([]error, len(proxies))
	var wg sync.WaitGroup
	for i, p := range proxies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := b.cluster.Status(p)
			if err != nil {
				errs[i] = err
				return
			}
			for _, m := range st {
				if m.ID == p.ID && m.Link == "self" {
					counts[i] = m.LocalAgents
					return
				}
			}
			errs[i] = fmt.Errorf("%s: no count of its own in its status", p.ID)
		}()
	}
	wg.Wait()
	out := map[string]int{}
	for i, p := range proxies {
		out[p.ID] = counts[i]
	}
	return out, errors.Join(errs...)
}

// waitConnected waits until the proxies hold a tunnel for every agent and
// returns how many they held last. It gives up after ConnectTimeout, or
// once the count has not grown for a third of it.
func (b *scaleBed) waitConnected(ctx context.Context, start time.Time) (int, error) {
	up, best, lastReport, lastGrowth := 0, 0, time.Now(), time.Now()
	stall := b.cfg.ConnectTimeout / 3
	stalled := false
	err := waitUntil(ctx, b.cfg.ConnectTimeout, 100*time.Millisecond, fmt.Sprintf("%d tunnels", b.n), func() bool {
		if b.exited() != nil {
			return true
		}
		if t, err := b.tunnels(); err == nil {
			up = 0
			for _, n := range t {
				up += n
			}
		}
		if up > best {
			best, lastGrowth = up, time.Now()
		}
		if time.Since(lastReport) >= 5*time.Second {
			b.env.progress("scale: %d agents: %d tunnels up after %s", b.n, up, time.Since(start).Round(time.Second))
			lastReport = time.Now()
		}
		stalled = time.Since(lastGrowth) > stall
		return up >= b.n || stalled
	})
	switch ferr := b.exited(); {
	case ferr != nil:
		return up, ferr
	case stalled:
		return up, fmt.Errorf("%d of %d tunnels up; no more for %s", up, b.n, stall)
	case err != nil:
		return up, fmt.Errorf("%d of %d tunnels up after %s", up, b.n, b.cfg.ConnectTimeout)
	}
	return up, nil
}

// healthyOn returns which of names (nil: every resource) p lists with a
// healthy agent. It reads /api/v1/resources into just the two fields it
// needs: with 10,000 resources the whole listing is a megabyte.
func (b *scaleBed) healthyOn(p *ProxyProc, names []string) (map[string]bool, error) {
	var list struct {
		Resources []struct {
			Name    string `json:"name"`
			Healthy int    `json:"healthy"`
		} `json:"resources"`
	}
	query := url.Values{"name": names}
	if err := b.cluster.h.API(p, "/api/v1/resources?"+query.Encode(), &list); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(list.Resources))
	for _, r := range list.Resources {
		if r.Healthy > 0 {
			out[r.Name] = true
		}
	}
	return out, nil
}

// waitRoutes waits until every proxy lists every agent's resource as
// healthy. It polls the route counts in /api/v1/status, which are cheap,
// and reads the whole resource listings only once those are complete.
func (b *scaleBed) waitRoutes(ctx context.Context) error {
	counts := make([]int, len(b.cluster.Proxies))
	err := waitUntil(ctx, b.cfg.ConnectTimeout, 50*time.Millisecond, "every route on every proxy", func() bool {
		st, err := b.cluster.Status(b.cluster.Proxies[0])
		if err != nil {
			return false
		}
		for _, m := range st {
			if m.Routes < b.n {
				return false
			}
		}
		all := true
		for i, p := range b.cluster.Proxies {
			if counts[i] == b.n {
				continue
			}
			if h, err := b.healthyOn(p, nil); err == nil {
				counts[i] = len(h)
			}
			all = all && counts[i] == b.n
		}
		return all
	})
	if err != nil {
		return fmt.Errorf("routes listed healthy per proxy %v of %d after %s", counts, b.n, b.cfg.ConnectTimeout)
	}
	return nil
}

// steady measures CPU over the steady window, and memory at its end.
func (b *scaleBed) steady(ctx context.Context, run *ScaleRun, base []int64) error {
	procs := make([]*Proc, 0, len(b.cluster.Proxies)+len(b.fleets)+1)
	for _, p := range b.cluster.Proxies {
		procs = append(procs, p.Proc)
	}
	procs = append(append(procs, b.fleets...), b.probe)
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		var err error
		if cpu0[i], err = p.CPU(); err != nil {
			return fmt.Errorf("%s: read CPU: %w", p.Name, err)
		}
	}
	t0 := time.Now()
	if !sleepCtx(ctx, b.cfg.Window) {
		return ctx.Err()
	}
	window := time.Since(t0)
	pct := func(i int) (float64, error) {
		c, err := procs[i].CPU()
		if err != nil {
			return 0, fmt.Errorf("%s: read CPU: %w", procs[i].Name, err)
		}
		return 100 * float64(c-cpu0[i]) / float64(window), nil
	}
	var tunnels map[string]int
	err := waitUntil(ctx, 15*time.Second, 100*time.Millisecond, "every proxy's count of tunnels", func() bool {
		t, err := b.tunnels()
		tunnels = t
		return err == nil
	})
	if err != nil {
		return err
	}
	for i, p := range b.cluster.Proxies {
		sp := ScaleProxy{ID: p.ID, Tunnels: tunnels[p.ID], BaseRSS: base[i]}
		if sp.CPU, err = pct(i); err != nil {
			return err
		}
		if sp.RSS, err = p.Proc.RSS(); err != nil {
			return err
		}
		if sp.PeakRSS, err = p.Proc.PeakRSS(); err != nil {
			return err
		}
		run.Proxies = append(run.Proxies, sp)
	}
	for i := len(b.cluster.Proxies); i < len(procs); i++ {
		c, err := pct(i)
		if err != nil {
			return err
		}
		run.FleetCPU += c
		rss, err := procs[i].RSS()
		if err != nil {
			return err
		}
		run.FleetRSS += rss
	}
	return nil
}

// probeRoundTrip kills the probe fleet and times until no proxy lists its
// agents' routes, then restarts it and times, per agent, from its tunnel
// coming up until every proxy lists its route. It returns both samples
// and the mean interval between two polls of a proxy.
func (b *scaleBed) probeRoundTrip(ctx context.Context) (down, up Durations, poll time.Duration, err error) {
	var names []string
	for i := b.probeFirst; i < b.n; i++ {
		names = append(names, agentName("scale", i))
	}
	killed := time.Now()
	b.probe.Kill()
	gone, poll1, err := b.routeTimes(ctx, names, false)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("probe agents' routes after a kill: %w", err)
	}
	for _, name := range names {
		down = append(down, gone[name].Sub(killed))
	}
	if err := b.startProbe(); err != nil {
		return nil, nil, 0, err
	}
	seen, poll2, err := b.routeTimes(ctx, names, true)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("probe agents' routes after a restart: %w", err)
	}
	ups, err := tunnelUps(b.probe.Log)
	if err != nil {
		return nil, nil, 0, err
	}
	for _, name := range names {
		t, ok := ups[name]
		if !ok {
			return nil, nil, 0, fmt.Errorf("%s: no tunnel-up line for %s in %s", b.probe.Name, name, b.probe.Log)
		}
		up = append(up, max(0, seen[name].Sub(t)))
	}
	return down, up, (poll1 + poll2) / 2, nil
}

// routeTimes polls every proxy's resource list until, on every proxy,
// each of names is listed healthy (want) or not (!want). It returns for
// each name when the last proxy first showed it so (the time the poll's
// answer arrived), and the mean interval between two polls of a proxy.
func (b *scaleBed) routeTimes(ctx context.Context, names []string, want bool) (map[string]time.Time, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	proxies := b.cluster.Proxies
	seen := make([]map[string]time.Time, len(proxies))
	errs := make([]error, len(proxies))
	polls := make([]time.Duration, len(proxies))
	var wg sync.WaitGroup
	for i, p := range proxies {
		seen[i] = map[string]time.Time{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, n := time.Now(), 0
			for len(seen[i]) < len(names) {
				if ctx.Err() != nil {
					errs[i] = fmt.Errorf("%s shows %d of %d as wanted: %w", p.ID, len(seen[i]), len(names), ctx.Err())
					return
				}
				h, err := b.healthyOn(p, names)
				now := time.Now()
				n++
				if err == nil {
					for _, name := range names {
						if _, done := seen[i][name]; !done && h[name] == want {
							seen[i][name] = now
						}
					}
				}
				sleepCtx(ctx, 10*time.Millisecond)
			}
			polls[i] = time.Since(first) / time.Duration(max(n, 1))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	out := map[string]time.Time{}
	var poll time.Duration
	for i := range proxies {
		for name, t := range seen[i] {
			if t.After(out[name]) {
				out[name] = t
			}
		}
		poll += polls[i] / time.Duration(len(proxies))
	}
	return out, poll, nil
}

// tunnelUps reads the first `tunnel NAME up NS` line of each agent from a
// fleet's log.
func tunnelUps(path string) (map[string]time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]time.Time{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 || fs[0] != "tunnel" || fs[2] != "up" {
			continue
		}
		ns, err := strconv.ParseInt(fs[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: malformed line %q", path, sc.Text())
		}
		if _, ok := out[fs[1]]; !ok {
			out[fs[1]] = time.Unix(0, ns)
		}
	}
	return out, sc.Err()
}

// failedStarts counts the `failed NAME: …` lines of every fleet log.
func (b *scaleBed) failedStarts() int {
	n := 0
	for _, p := range append(slices.Clone(b.fleets), b.probe) {
		if p == nil {
			continue
		}
		f, err := os.Open(p.Log)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "failed ") {
				n++
			}
		}
		f.Close()
	}
	return n
}

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// scaleReport turns the runs into tables and plots.
func scaleReport(cfg ScaleConfig, runs []ScaleRun) Report {
	sum := Table{
		Name:  "scale",
		Title: "Agents on a 3-proxy cluster, each with its own tunnel",
		Header: []string{"agents", "tunnels up", "per proxy", "failed starts", "connect all", "routes on every proxy",
			"route up p50 / p99", "route down p50 / p99", "proxy RSS per tunnel", "proxy RSS", "proxy CPU", "fleet CPU", "fleet RSS"},
	}
	detail := Table{
		Name:   "scale-proxies",
		Title:  "Each proxy at steady state",
		Header: []string{"agents", "proxy", "tunnels", "RSS before agents", "RSS steady", "peak RSS", "RSS per tunnel", "CPU (% of a core)"},
	}
	for _, r := range runs {
		var per []string
		var rssMin, rssMax int64
		var cpuMin, cpuMax, perTunnelMax float64
		for i, p := range r.Proxies {
			per = append(per, strconv.Itoa(p.Tunnels))
			if i == 0 {
				rssMin, rssMax, cpuMin, cpuMax = p.RSS, p.RSS, p.CPU, p.CPU
			}
			rssMin, rssMax = min(rssMin, p.RSS), max(rssMax, p.RSS)
			cpuMin, cpuMax = min(cpuMin, p.CPU), max(cpuMax, p.CPU)
			perTunnelMax = max(perTunnelMax, p.RSSPerTunnel())
			detail.Rows = append(detail.Rows, []string{strconv.Itoa(r.Agents), p.ID, strconv.Itoa(p.Tunnels),
				mib(p.BaseRSS), mib(p.RSS), mib(p.PeakRSS), kib(p.RSSPerTunnel()), fmt.Sprintf("%.1f %%", p.CPU)})
		}
		row := []string{strconv.Itoa(r.Agents), strconv.Itoa(r.Connected), dashIfEmpty(strings.Join(per, " / ")),
			strconv.Itoa(r.FailedStarts)}
		if r.ConnectAll == 0 {
			row = append(row, "did not: "+r.Why)
		} else {
			row = append(row, seconds(r.ConnectAll))
		}
		switch {
		case r.ConnectAll == 0:
			row = append(row, "-")
		case r.RoutesAll == 0:
			row = append(row, "did not: "+r.Why)
		default:
			row = append(row, "+"+ms(r.RoutesAll))
		}
		row = append(row, quantiles(r.RouteUp), quantiles(r.RouteDown))
		if len(r.Proxies) == 0 {
			row = append(row, "-", "-", "-", "-", "-")
		} else {
			row = append(row, "max "+kib(perTunnelMax),
				fmt.Sprintf("%s – %s", mib(rssMin), mib(rssMax)),
				fmt.Sprintf("%.1f – %.1f %%", cpuMin, cpuMax),
				fmt.Sprintf("%.0f %%", r.FleetCPU), mib(r.FleetRSS))
		}
		sum.Rows = append(sum.Rows, row)
	}
	sum.Notes = []string{
		fmt.Sprintf("Each agent count runs on a fresh cluster of 3 `warren proxy` processes (127.0.1.1–3). The agents are real (package actors/agent, one identity file and one SSH tunnel each, tunnel_strategy proxy_peering, connection_count 1), hosted %d to a `warren bench fleet` process because a process may hold only 20,000 open files here; agent i dials proxy i mod 3. Each serves one tcp resource, scale-NNNNN, forwarding to an echo server. Agents heartbeat every %s; proxies send keepalives every 2 s (their default); agents check their upstream every %s.", cfg.PerFleet, cfg.Heartbeat, cfg.Health),
		"**connect all**: from starting the fleet processes until the proxies hold a tunnel for every agent (the sum of local agents in /api/v1/status); it includes each agent's first join (key generation, an SSH handshake, a certificate) and its tunnel's SSH handshake and hello, " + strconv.Itoa(cfg.Concurrency) + " agents starting at once over all fleets. It is CPU-bound: both ends of every handshake (mlkem768x25519 key exchange, ed25519 certificates) run on this machine's cores.",
		"**routes on every proxy**: from the moment the last tunnel was up until every proxy's /api/v1/resources lists all N resources as healthy (route replicated and first heartbeat applied), polled every 50 ms.",
		fmt.Sprintf("**route up / down**: after steady state, the last %d agents (their own fleet process) are killed with SIGKILL, then restarted, %d time(s). Down: from the kill until no proxy lists their resources as healthy. Up: from each agent's tunnel coming up (the agent's own view, sampled every 2 ms) until every proxy lists its resource as healthy. Every proxy is asked for just these resources (/api/v1/resources?name=…) every 10 ms; the figures include up to one poll (see the detail notes).", cfg.Probes, cfg.Rounds),
		fmt.Sprintf("**proxy RSS per tunnel**: (RSS at the end of the steady window − RSS before any agent) / that proxy's tunnels; the worst proxy. **proxy CPU** and **fleet CPU**: CPU time over a %s window of heartbeats and keepalives only, after %s of settling, as %% of one core (range over the 3 proxies; the fleets summed). The machine has %d cores shared by proxies, fleets and the bench.", cfg.Window, cfg.Settle, runtime.NumCPU()),
	}
	for _, r := range runs {
		var proxies float64
		for _, p := range r.Proxies {
			proxies += p.CPU
		}
		if len(r.Proxies) > 0 && r.FleetCPU > proxies {
			sum.Notes = append(sum.Notes, fmt.Sprintf("At %d agents the fleets (the agents' side) used %.0f %% of a core in the steady window, the 3 proxies %.0f %% together: on this machine the agents cost more CPU than the proxies serving them.", r.Agents, r.FleetCPU, proxies))
		}
	}
	var polls []string
	for _, r := range runs {
		if r.PollEvery > 0 {
			polls = append(polls, fmt.Sprintf("%d agents: %s", r.Agents, ms(r.PollEvery)))
		}
	}
	detail.Notes = []string{"RSS before agents: 2 s after the cluster formed. Steady: at the end of the steady window. Peak: the highest RSS of the process (VmHWM)."}
	if len(polls) > 0 {
		detail.Notes = append(detail.Notes, "Interval between two polls of a proxy while probing (the resolution of route up / down): "+strings.Join(polls, ", ")+".")
	}
	rep := Report{Scenario: "scale", Tables: []Table{sum, detail}}
	rep.Plots = scalePlots(runs)
	return rep
}

// scalePlots draws memory per tunnel, connect times and route
// convergence per agent count.
func scalePlots(runs []ScaleRun) []Plot {
	var labels []string
	var connect, routes []float64
	perProxy := map[string][]float64{}
	var ids []string
	var cdf []plot.Series
	for _, r := range runs {
		if len(r.Proxies) == 0 {
			continue
		}
		labels = append(labels, fmt.Sprintf("%d agents", r.Agents))
		connect = append(connect, r.ConnectAll.Seconds())
		routes = append(routes, r.RoutesAll.Seconds())
		for _, p := range r.Proxies {
			if _, ok := perProxy[p.ID]; !ok {
				ids = append(ids, p.ID)
			}
			perProxy[p.ID] = append(perProxy[p.ID], p.RSSPerTunnel()/1024)
		}
		if len(r.RouteUp) > 0 {
			cdf = append(cdf, plot.Series{Name: fmt.Sprintf("up, %d agents", r.Agents), Values: r.RouteUp.Millis()})
		}
		if len(r.RouteDown) > 0 {
			cdf = append(cdf, plot.Series{Name: fmt.Sprintf("down, %d agents", r.Agents), Values: r.RouteDown.Millis()})
		}
	}
	if len(labels) == 0 {
		return nil
	}
	var rss []plot.Series
	for _, id := range ids {
		if len(perProxy[id]) == len(labels) {
			rss = append(rss, plot.Series{Name: id, Values: perProxy[id]})
		}
	}
	plots := []Plot{
		{Name: "scale-rss-per-tunnel", Render: func(w io.Writer) error {
			return plot.Bars(w, "Proxy RSS per tunnel (goal: under 64 KiB)", "KiB", labels, rss)
		}},
		{Name: "scale-connect", Render: func(w io.Writer) error {
			return plot.Bars(w, "Time for every agent to connect, then for every route to reach every proxy", "s", labels,
				[]plot.Series{{Name: "connect all", Values: connect}, {Name: "routes on every proxy after that", Values: routes}})
		}},
	}
	if len(cdf) > 0 {
		plots = append(plots, Plot{Name: "scale-route-convergence", Render: func(w io.Writer) error {
			return plot.CDF(w, "One agent's route on every proxy, after its tunnel comes up or goes away (goal: under 2 s)", "ms", cdf)
		}})
	}
	return plots
}

// quantiles formats the p50 and p99 of samples.
func quantiles(d Durations) string {
	if len(d) == 0 {
		return "-"
	}
	return ms(d.Quantile(0.5)) + " / " + ms(d.Quantile(0.99))
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
func mib(b int64) string             { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
func kib(b float64) string           { return fmt.Sprintf("%.1f KiB", b/1024) }

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseCounts parses a comma-separated list of agent counts.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(f, "_", "")))
		if err != nil {
			return nil, fmt.Errorf("--agents: %q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// scaleFlags registers the scale scenario's settings.
func scaleFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultScaleConfig()
	if tiny {
		c = TinyScaleConfig()
	}
	counts := make([]string, len(c.Agents))
	for i, n := range c.Agents {
		counts[i] = strconv.Itoa(n)
	}
	agents := fs.String("agents", strings.Join(counts, ","), "agent counts, comma-separated, each on a fresh cluster; the run stops at the first that does not hold")
	fs.IntVar(&c.PerFleet, "per-fleet", c.PerFleet, "agents per fleet process")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "agents starting at once, over all fleets")
	fs.DurationVar(&c.Heartbeat, "heartbeat", c.Heartbeat, "agents' heartbeat interval")
	fs.DurationVar(&c.Health, "health", c.Health, "agents' upstream health check interval")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "give up on an agent count whose tunnels or routes are not all up by then")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "pause between convergence and the steady window")
	fs.DurationVar(&c.Window, "window", c.Window, "steady window over which CPU is measured")
	fs.IntVar(&c.Probes, "probes", c.Probes, "agents killed and restarted per round to time one agent's route convergence")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "kill-and-restart rounds")
	return func(ctx context.Context, env Env) (Report, error) {
		var err error
		if c.Agents, err = parseCounts(*agents); err != nil {
			return Report{}, fmt.Errorf("scale: %w", err)
		}
		return RunScale(ctx, env, c)
	}
}
