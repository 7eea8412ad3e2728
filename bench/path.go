package bench

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
)

// PathConfig sizes the path scenario.
type PathConfig struct {
	Setups     int   // `ssh … true` runs per row
	RoundTrips int   // one-byte round trips per row
	BulkBytes  int64 // bytes per upload
	BulkRuns   int   // uploads per row; the median is reported
	// Profiles, if set, is a directory for CPU profiles of the entry
	// proxy, the peer proxy and the agent, taken over ProfileSeconds of
	// the first upload through Warren to the stock sshd (tunnel on the
	// entry proxy, and through a peer).
	Profiles       string
	ProfileSeconds int
}

// DefaultPathConfig is the full run; TinyPathConfig only checks it works.
func DefaultPathConfig() PathConfig {
	return PathConfig{Setups: 30, RoundTrips: 2000, BulkBytes: 1 << 30, BulkRuns: 3}
}

func TinyPathConfig() PathConfig {
	return PathConfig{Setups: 2, RoundTrips: 50, BulkBytes: 4 << 20, BulkRuns: 1}
}

// route is one way from the stock ssh client to a target.
type route struct {
	Name   string   // how the bytes travel
	Target string   // what answers at the end
	Args   []string // ssh arguments before the remote command
}

// pathBed is what the path and interactive scenarios run on: a stock
// sshd target, two stock sshd bastions, and a 2-proxy Warren cluster with
// one agent tunneled to proxy-1 only, serving the same sshd as a tcp
// resource and its own embedded SSH server.
type pathBed struct {
	cluster *Cluster
	client  sshClient
	routes  []route
	// profiled are the routes whose processes are profiled (with
	// --profiles), by index in routes: a name and the processes.
	profiled map[int]profiledRoute
	stop     cleanups
}

type profiledRoute struct {
	name    string
	targets []profileTarget
}

// startPathBed starts the bed; with profiles, agent-a serves its profiles
// and b.profiled says whose to take on which route.
func startPathBed(ctx context.Context, env Env, name string, profiles bool) (_ *pathBed, err error) {
	dir, err := env.scratch(name)
	if err != nil {
		return nil, err
	}
	b := &pathBed{}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	env.progress("starting a 2-proxy Warren cluster, an agent and three stock sshd servers in %s", dir)
	if b.cluster, err = StartCluster(ctx, env, dir, ClusterConfig{Proxies: 2}); err != nil {
		return nil, err
	}
	b.stop.add(b.cluster.Close)
	o, err := newOpenSSH(dir, b.cluster.userCA)
	if err != nil {
		return nil, err
	}
	target, b1, b2, err := o.startChain(&b.stop)
	if err != nil {
		return nil, err
	}
	debug, agentToken := "", ""
	if profiles {
		if debug, agentToken, err = agentDebugExtra(dir); err != nil {
			return nil, err
		}
	}
	// One tunnel, to proxy-1: sessions entering proxy-2 cross the peer link.
	if _, err := b.cluster.StartAgent("agent-a", AgentConfig{Proxies: []int{0}, Extra: fmt.Sprintf(`connection_count: 1
resources:
  - {name: sshd, kind: tcp, addr: "%s"}
  - {name: node, kind: ssh}
`, target.Addr) + debug}); err != nil {
		return nil, err
	}
	// A second agent, also tunneled to proxy-1, serving the same sshd: the
	// interactive scenario uploads through it to tell the cost of sharing
	// one tunnel from the cost of sharing the proxies.
	if _, err := b.cluster.StartAgent("agent-b", AgentConfig{Proxies: []int{0}, Extra: fmt.Sprintf(`connection_count: 1
resources:
  - {name: sshd-b, kind: tcp, addr: "%s"}
`, target.Addr)}); err != nil {
		return nil, err
	}
	for _, r := range []string{"sshd", "node", "sshd-b"} {
		if err := b.cluster.WaitHealthy(ctx, r, 1, 30*time.Second); err != nil {
			return nil, err
		}
	}
	p1, p2 := b.cluster.Proxies[0], b.cluster.Proxies[1]
	cfg := filepath.Join(dir, "ssh_config")
	err = writeClientConfig(cfg, b.cluster.Login, b.cluster.User, o, []clientHost{
		{Name: "target", Addr: target.Addr},
		{Name: "b1", Addr: b1.Addr},
		{Name: "b2", Addr: b2.Addr},
		{Name: p1.ID, Addr: p1.User, User: "bench"},
		{Name: p2.ID, Addr: p2.User, User: "bench"},
	})
	if err != nil {
		return nil, err
	}
	b.client = sshClient{config: cfg}
	b.routes = []route{
		{"ssh, direct", "stock sshd", []string{"target"}},
		{"ssh -J b1", "stock sshd", []string{"-J", "b1", "target"}},
		{"ssh -J b1,b2", "stock sshd", []string{"-J", "b1,b2", "target"}},
		{"Warren, tunnel on entry proxy", "stock sshd (tcp resource)", []string{"-J", p1.ID, "sshd"}},
		{"Warren, through a peer proxy", "stock sshd (tcp resource)", []string{"-J", p2.ID, "sshd"}},
		{"Warren, tunnel on entry proxy", "embedded SSH server", []string{"-J", p1.ID, "node"}},
		{"Warren, through a peer proxy", "embedded SSH server", []string{"-J", p2.ID, "node"}},
	}
	if profiles {
		proxy := func(role string, p *ProxyProc) profileTarget {
			return profileTarget{role, "http://" + p.HTTP + "/debug/pprof/profile", b.cluster.APIToken}
		}
		agent := profileTarget{"agent", "http://" + profileAgentAddr + "/debug/pprof/profile", agentToken}
		b.profiled = map[int]profiledRoute{
			3: {"local", []profileTarget{proxy("entry-proxy", p1), agent}},
			4: {"peer", []profileTarget{proxy("entry-proxy", p2), proxy("peer-proxy", p1), agent}},
		}
	}
	// Every route works before anything is measured.
	for _, r := range b.routes {
		if _, err := b.client.setup(ctx, r.Args); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *pathBed) close() { b.stop.run() }

// randomBlock is 1 MiB of random bytes: what uploads send, over and over.
func randomBlock() []byte {
	block := make([]byte, 1<<20)
	rand.Read(block)
	return block
}

// pathResult is one route's figures.
type pathResult struct {
	route      route
	setups     Durations
	rtts       Durations
	bulk       Durations
	bulkTaken  time.Duration // median
	bulkAmount int64
}

// RunPath measures session setup, keystroke round trip and bulk upload on
// every route, one after another on the same machine in the same run.
func RunPath(ctx context.Context, env Env, cfg PathConfig) (Report, error) {
	bed, err := startPathBed(ctx, env, "path", cfg.Profiles != "")
	if err != nil {
		return Report{}, err
	}
	defer bed.close()
	res := make([]*pathResult, len(bed.routes))
	for i, r := range bed.routes {
		res[i] = &pathResult{route: r, bulkAmount: cfg.BulkBytes}
	}
	// Setups interleave the routes, so that a noisy moment hits them all.
	env.progress("session setup: %d × %d routes", cfg.Setups, len(res))
	for n := 0; n < cfg.Setups; n++ {
		for _, r := range res {
			d, err := bed.client.setup(ctx, r.route.Args)
			if err != nil {
				return Report{}, err
			}
			r.setups = append(r.setups, d)
		}
	}
	for _, r := range res {
		env.progress("round trips: %d on %s → %s", cfg.RoundTrips, r.route.Name, r.route.Target)
		s, err := bed.client.startInteractive(ctx, r.route.Args)
		if err != nil {
			return Report{}, err
		}
		// A short warm-up, then the samples.
		if _, err := s.roundTrips(min(100, cfg.RoundTrips)); err != nil {
			s.close()
			return Report{}, err
		}
		r.rtts, err = s.roundTrips(cfg.RoundTrips)
		s.close()
		if err != nil {
			return Report{}, err
		}
	}
	block := randomBlock()
	for run := 0; run < cfg.BulkRuns; run++ {
		for i, r := range res {
			env.progress("upload %d/%d: %d MiB on %s → %s", run+1, cfg.BulkRuns, cfg.BulkBytes>>20, r.route.Name, r.route.Target)
			wait := func() error { return nil }
			if p, ok := bed.profiled[i]; ok && run == 0 {
				env.progress("taking %d s CPU profiles of the %s route's processes into %s", cfg.ProfileSeconds, p.name, cfg.Profiles)
				wait = takeProfiles(ctx, cfg.Profiles, p.name, cfg.ProfileSeconds, p.targets)
			}
			d, err := bed.client.upload(ctx, r.route.Args, cfg.BulkBytes, block)
			if perr := wait(); err == nil {
				err = perr
			}
			if err != nil {
				return Report{}, err
			}
			r.bulk = append(r.bulk, d)
		}
	}
	for _, r := range res {
		r.bulkTaken = r.bulk.Median()
	}
	return pathReport(cfg, res), nil
}

func pathReport(cfg PathConfig, res []*pathResult) Report {
	t := Table{
		Name:  "path",
		Title: fmt.Sprintf("Data path: stock OpenSSH client, cipher %s on every SSH hop", Cipher),
		Header: []string{"route", "target", "setup p50", "setup p90",
			"round trip p50", "round trip p99", fmt.Sprintf("upload %s (median of %d)", sizeName(cfg.BulkBytes), cfg.BulkRuns)},
	}
	for _, r := range res {
		t.Rows = append(t.Rows, []string{
			r.route.Name, r.route.Target,
			ms(r.setups.Median()), ms(r.setups.Quantile(0.9)),
			us(r.rtts.Median()), us(r.rtts.Quantile(0.99)),
			mibps(r.bulkAmount, r.bulkTaken),
		})
	}
	t.Notes = []string{
		fmt.Sprintf("Setup: spawn of `ssh -F cfg [-J …] HOST true` until it exits, %d runs per route, interleaved. Round trip: one byte written to `ssh HOST cat` and read back, %d samples after 100 warm-up. Upload: `ssh HOST 'cat >/dev/null'` fed %s of random bytes, from the first byte until ssh exits.", cfg.Setups, cfg.RoundTrips, sizeName(cfg.BulkBytes)),
		"Every server is on this machine's loopback: the stock sshd target and bastions (127.0.2.x), two Warren proxies (127.0.1.1-2) and one agent whose only tunnel is on proxy-1. Warren's hops: client→proxy SSH, proxy→proxy gRPC over TLS 1.3 (peer rows), proxy→agent SSH tunnel, agent→target TCP; the client's SSH runs end to end with the target.",
		"The OpenSSH client authenticates everywhere with one Warren user certificate; the stock sshd servers trust the cluster's user CA.",
	}
	goals := Table{
		Name:   "path-goals",
		Title:  "Goals (reported, not asserted)",
		Header: []string{"goal", "Warren", "anchor", "met"},
	}
	find := func(name, target string) *pathResult {
		for _, r := range res {
			if r.route.Name == name && r.route.Target == target {
				return r
			}
		}
		return nil
	}
	anchorJ1, anchorJ2 := find("ssh -J b1", "stock sshd"), find("ssh -J b1,b2", "stock sshd")
	for _, g := range []struct {
		warren, anchor *pathResult
		label          string
	}{
		{find("Warren, through a peer proxy", "stock sshd (tcp resource)"), anchorJ2, "peer hop (sshd) beats -J b1,b2"},
		{find("Warren, through a peer proxy", "embedded SSH server"), anchorJ2, "peer hop (embedded) beats -J b1,b2"},
		{find("Warren, tunnel on entry proxy", "stock sshd (tcp resource)"), anchorJ1, "local tunnel (sshd) beats -J b1"},
		{find("Warren, tunnel on entry proxy", "embedded SSH server"), anchorJ1, "local tunnel (embedded) beats -J b1"},
	} {
		w, a := g.warren, g.anchor
		goals.Rows = append(goals.Rows,
			[]string{g.label + ": setup p50", ms(w.setups.Median()), ms(a.setups.Median()), yesNo(w.setups.Median() < a.setups.Median())},
			[]string{g.label + ": round trip p50", us(w.rtts.Median()), us(a.rtts.Median()), yesNo(w.rtts.Median() < a.rtts.Median())},
			[]string{g.label + ": round trip p99", us(w.rtts.Quantile(0.99)), us(a.rtts.Quantile(0.99)), yesNo(w.rtts.Quantile(0.99) < a.rtts.Quantile(0.99))},
			[]string{g.label + ": upload", mibps(w.bulkAmount, w.bulkTaken), mibps(a.bulkAmount, a.bulkTaken), yesNo(w.bulkTaken < a.bulkTaken)},
		)
	}
	labels := make([]string, len(res))
	var setups, rtts []plot.Series
	rates := plot.Series{Name: "upload"}
	for i, r := range res {
		labels[i] = r.route.Name + " → " + r.route.Target
		setups = append(setups, plot.Series{Name: labels[i], Values: r.setups.Millis()})
		rtts = append(rtts, plot.Series{Name: labels[i], Values: r.rtts.Micros()})
		rates.Values = append(rates.Values, float64(r.bulkAmount)/(1<<20)/r.bulkTaken.Seconds())
	}
	return Report{
		Scenario: "path",
		Tables:   []Table{t, goals},
		Plots: []Plot{
			{Name: "path-setup", Render: func(w io.Writer) error {
				return plot.CDF(w, "Session setup: ssh … true, spawn to exit", "ms", setups)
			}},
			{Name: "path-roundtrip", Render: func(w io.Writer) error {
				return plot.CDF(w, "One-byte round trip through ssh … cat", "µs", rtts)
			}},
			{Name: "path-upload", Render: func(w io.Writer) error {
				return plot.Bars(w, fmt.Sprintf("Upload of %s, median of %d", sizeName(cfg.BulkBytes), cfg.BulkRuns), "MiB/s", labels, []plot.Series{rates})
			}},
		},
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func sizeName(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// pathFlags registers the path scenario's settings.
func pathFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultPathConfig()
	if tiny {
		c = TinyPathConfig()
	}
	fs.IntVar(&c.Setups, "setups", c.Setups, "ssh … true runs per route")
	fs.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "one-byte round trips per route")
	mib := fs.Int64("bulk-mib", c.BulkBytes>>20, "MiB per upload")
	fs.IntVar(&c.BulkRuns, "bulk-runs", c.BulkRuns, "uploads per route (the median is reported)")
	fs.StringVar(&c.Profiles, "profiles", "", "`DIR`: a directory for CPU profiles of the entry proxy, the peer proxy and the agent during the first upload through Warren to the stock sshd (local-*.pprof, peer-*.pprof, for go tool pprof); the profile ends before the upload if --profile-seconds is shorter")
	fs.IntVar(&c.ProfileSeconds, "profile-seconds", 5, "length of each CPU profile (with --profiles)")
	return func(ctx context.Context, env Env) (Report, error) {
		c.BulkBytes = *mib << 20
		if c.Setups < 1 || c.RoundTrips < 1 || c.BulkBytes < 1 || c.BulkRuns < 1 {
			return Report{}, fmt.Errorf("path: --setups, --round-trips, --bulk-mib and --bulk-runs must be at least 1")
		}
		if c.Profiles != "" {
			if c.ProfileSeconds < 1 || c.ProfileSeconds > 300 {
				return Report{}, fmt.Errorf("path: --profile-seconds %d is outside 1 to 300", c.ProfileSeconds)
			}
			if err := os.MkdirAll(c.Profiles, 0o755); err != nil {
				return Report{}, fmt.Errorf("path: --profiles: %w", err)
			}
		}
		return RunPath(ctx, env, c)
	}
}
