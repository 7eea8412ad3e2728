package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/bench/plot"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/regions"
)

// RegionsConfig sizes the regions scenario: users in every region reach
// nodes in every region of the emulated WAN, over each layout.
type RegionsConfig struct {
	// WAN gives the regions, their one-way delays and the delay inside a
	// region (the wan scenario's matrix; its rate cap only with Capped).
	WAN WANConfig
	// Before is the one region whose proxies every user enters in the
	// single-region layout.
	Before           string
	ProxiesPerRegion int
	Setups           int   // `ssh … true` runs per route
	RoundTrips       int   // keystrokes per route
	BulkBytes        int64 // one upload per route
	// Parallel routes are measured at once in the setup and keystroke
	// phases (uploads run one at a time); Pace is the least time between
	// one route's keystrokes, a fast typist's.
	Parallel int
	Pace     time.Duration
	// What the wan-load scenario changes on the same bed (the regions
	// scenario leaves them zero). Capped applies WAN.Rate and WAN.Queue
	// between regions. Tunnels is the connection_count of each node
	// host's agent (0: 2). Sources adds a byte source on every node host
	// (sourcePort), served by its agent as the tcp resource
	// source-REGION.
	Capped  bool
	Tunnels int
	Sources bool
}

// DefaultRegionsConfig is the full run; TinyRegionsConfig only checks it
// works (two regions, one proxy each).
func DefaultRegionsConfig() RegionsConfig {
	return RegionsConfig{WAN: DefaultWANConfig(), Before: "us", ProxiesPerRegion: 2,
		Setups: 8, RoundTrips: 150, BulkBytes: 256 << 20, Parallel: 3, Pace: 20 * time.Millisecond}
}

func TinyRegionsConfig() RegionsConfig {
	c := DefaultRegionsConfig()
	c.WAN.Regions = []string{"us", "eu"}
	c.ProxiesPerRegion, c.Setups, c.RoundTrips, c.BulkBytes, c.Parallel = 1, 1, 10, 1<<20, 4
	return c
}

// The layouts, in the order of the tables.
const (
	layoutWarren  = iota // the user's own region's proxy
	layoutBefore         // a proxy of RegionsConfig.Before
	layoutBastion        // ssh -J a stock sshd in the node's region
	layoutDirect         // ssh straight to the node's sshd
	layoutNetwork        // TCP between the user's host and the node's
	layouts
)

var layoutNames = [layouts]string{
	layoutWarren:  "Warren, nearest proxy",
	layoutBefore:  "Warren, every user via %s",
	layoutBastion: "ssh -J bastion in node's region",
	layoutDirect:  "ssh, direct",
	layoutNetwork: "network (TCP)",
}

func (c RegionsConfig) layoutName(l int) string {
	if l == layoutBefore {
		return fmt.Sprintf(layoutNames[l], c.Before)
	}
	return layoutNames[l]
}

// regionRoute is one layout from one region's user to one region's node,
// and what it measured.
type regionRoute struct {
	layout     int
	user, node string
	args       []string // ssh arguments; none for the network
	setups     Durations
	rtts       Durations
	upload     time.Duration
}

func (r *regionRoute) String() string {
	return fmt.Sprintf("%s → %s, %s", r.user, r.node, strings.Join(r.args, " "))
}

// regionsBed is the running cluster and the stock servers beside it. In
// every region: Warren's proxies, its agents (node-REGION-1, idle here),
// the user host, and two extra hosts: REGION-bastion (a stock sshd) and
// REGION-node, the node every layout ends at: a stock sshd on port 22, a
// Warren agent serving it as tcp resource sshd-REGION, and an echo server
// on port 7 for the network's own round trip (and, for wan-load, a byte
// source on sourcePort, served as tcp resource source-REGION).
type regionsBed struct {
	cfg     RegionsConfig
	cluster *regions.Cluster
	clients map[string]sshClient // by user region
	stop    cleanups
}

const (
	bastionHost = "bastion"
	nodeHost    = "node"
)

func startRegionsBed(ctx context.Context, env Env, cfg RegionsConfig) (_ *regionsBed, err error) {
	dir, err := env.scratch("regions")
	if err != nil {
		return nil, err
	}
	b := &regionsBed{cfg: cfg, clients: map[string]sshClient{}}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	delays := map[[2]string]time.Duration{}
	for i, x := range cfg.WAN.Regions {
		for _, y := range cfg.WAN.Regions[i+1:] {
			delays[[2]string{x, y}] = cfg.WAN.oneWay(x, y)
		}
	}
	env.progress("starting Warren in %v (%d proxies each), with a bastion and a node per region, in %s", cfg.WAN.Regions, cfg.ProxiesPerRegion, dir)
	began := time.Now()
	spec := regions.Spec{Bin: env.Binary, Dir: dir, Regions: cfg.WAN.Regions,
		ProxiesPerRegion: cfg.ProxiesPerRegion, Delays: delays, Inside: cfg.WAN.Inside,
		ExtraHosts: []string{bastionHost, nodeHost}}
	if cfg.Capped {
		spec.Rate, spec.Queue = cfg.WAN.Rate, cfg.WAN.Queue
	}
	b.cluster, err = regions.Start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("regions: %w (the emulated WAN needs root, iproute2 and /dev/net/tun)", err)
	}
	b.stop.add(func() { b.cluster.Close() })
	c := b.cluster
	o, err := newOpenSSH(dir, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.H.Auth.UserCA.PublicKey()))))
	if err != nil {
		return nil, err
	}
	tokens, err := c.H.Auth.JoinTokens()
	if err != nil || len(tokens) == 0 {
		return nil, fmt.Errorf("regions: no static join token in %s: %v", c.H.AuthDir, err)
	}
	var hosts []clientHost
	for _, r := range cfg.WAN.Regions {
		for _, h := range []string{bastionHost, nodeHost} {
			host := regions.ExtraHost(r, h)
			addr := net.JoinHostPort(c.Net.Addr(host).String(), "22")
			if err := b.startSshd(ctx, o, host, addr); err != nil {
				return nil, err
			}
			hosts = append(hosts, clientHost{Name: host, Addr: addr})
		}
		node := regions.ExtraHost(r, nodeHost)
		if err := b.serve(node, "7", serveWANProbe); err != nil {
			return nil, err
		}
		if cfg.Sources {
			block := randomBlock()
			if err := b.serve(node, sourcePort, func(ln net.Listener) { serveSource(ln, block) }); err != nil {
				return nil, err
			}
		}
		if err := b.startAgent(r, tokens[0]); err != nil {
			return nil, err
		}
		for _, p := range c.Proxies(r) {
			hosts = append(hosts, clientHost{Name: p.ID, Addr: p.User, User: c.User.Name})
		}
	}
	if err := harness.Until(ctx, time.Minute, 100*time.Millisecond, "every node's resources healthy on every proxy", func() (bool, error) {
		for _, r := range cfg.WAN.Regions {
			for _, o := range cfg.WAN.Regions {
				for _, p := range c.Proxies(o) {
					if c.H.Healthy(p.Proxy, "sshd-"+r) < 1 || cfg.Sources && c.H.Healthy(p.Proxy, "source-"+r) < 1 {
						return false, nil
					}
				}
			}
		}
		return true, nil
	}); err != nil {
		return nil, err
	}
	// One known_hosts: the proxies' host CA and the stock servers' key.
	kh := filepath.Join(dir, "bench_known_hosts")
	proxyCA, err := os.ReadFile(c.User.KnownHosts)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(kh, proxyCA, 0o644); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "bench_ssh_config")
	if err := writeClientConfig(cfgPath, c.Spec.Login, UserFiles{Key: c.User.Key, Cert: c.User.Cert, KnownHosts: kh}, o, hosts); err != nil {
		return nil, err
	}
	for _, r := range cfg.WAN.Regions {
		b.clients[r] = sshClient{config: cfgPath, netns: c.Net.Namespace(regions.UserHost(r))}
	}
	env.progress("up in %s", time.Since(began).Round(time.Millisecond))
	return b, nil
}

// serve listens on port of host's address, in host's namespace, and runs
// server on the listener until the bed closes it.
func (b *regionsBed) serve(host, port string, server func(net.Listener)) error {
	c := b.cluster
	var ln net.Listener
	if err := c.Net.Do(host, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(c.Net.Addr(host).String(), port))
		return err
	}); err != nil {
		return fmt.Errorf("listen on %s port %s: %w", host, port, err)
	}
	b.stop.add(func() { ln.Close() })
	go server(ln)
	return nil
}

// startSshd runs a stock sshd on host, listening on addr. The sessions
// get SHLVL=1, so that the remote command's bash skips ~/.bashrc, which
// bash reads for sshd and may take seconds on a developer's machine (as
// internal/regions does for the agents' servers).
func (b *regionsBed) startSshd(ctx context.Context, o *openssh, host, addr string) error {
	name := "sshd-" + host
	cfg, err := o.writeConfig(name, addr, "SetEnv SHLVL=1\n")
	if err != nil {
		return err
	}
	cmd := b.cluster.Command(host, o.sshd, "-D", "-e", "-f", cfg)
	cmd.Name, cmd.Log = name, filepath.Join(o.dir, name+".log")
	p, err := harness.Start(cmd)
	if err != nil {
		return err
	}
	b.stop.add(p.Stop)
	return harness.Until(ctx, 10*time.Second, 20*time.Millisecond, name+" listening", func() (bool, error) {
		if p.Exited() {
			return false, p.Failure()
		}
		conn, err := b.cluster.Net.DialContext(ctx, host, "tcp", addr)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}

// startAgent runs an agent on region's node host serving its sshd as
// sshd-REGION (and its byte source as source-REGION, with
// RegionsConfig.Sources), tunneled to two proxies (RegionsConfig.Tunnels),
// its own region's first (as the cluster's own agents).
func (b *regionsBed) startAgent(region, token string) error {
	c := b.cluster
	var tunnels []string
	for _, p := range c.Proxies(region) {
		tunnels = append(tunnels, p.Tunnel)
	}
	for _, r := range b.cfg.WAN.Regions {
		if r != region {
			for _, p := range c.Proxies(r) {
				tunnels = append(tunnels, p.Tunnel)
			}
		}
	}
	host := regions.ExtraHost(region, nodeHost)
	ip := c.Net.Addr(host).String()
	count := b.cfg.Tunnels
	if count == 0 {
		count = 2
	}
	extra := fmt.Sprintf("region: %q\nconnection_count: %d\nresources:\n  - {name: %q, kind: tcp, addr: %q}\n",
		region, count, "sshd-"+region, net.JoinHostPort(ip, "22"))
	if b.cfg.Sources {
		extra += fmt.Sprintf("  - {name: %q, kind: tcp, addr: %q}\n", "source-"+region, net.JoinHostPort(ip, sourcePort))
	}
	a := &harness.Agent{Name: "agent-" + host, Proxies: tunnels, Token: token, Extra: extra}
	if err := c.H.WriteAgentConfig(a); err != nil {
		return err
	}
	cmd := c.Command(host, c.Spec.Bin, "agent", "--config", a.Config)
	cmd.Name, cmd.Log = a.Name, filepath.Join(c.Spec.Dir, a.Name+".log")
	p, err := harness.Start(cmd)
	if err != nil {
		return err
	}
	b.stop.add(p.Stop)
	return nil
}

func (b *regionsBed) close() { b.stop.run() }

// routes is every layout from every user region to every node region.
func (b *regionsBed) routes() []*regionRoute {
	var out []*regionRoute
	before := b.cluster.Proxies(b.cfg.Before)[0].ID
	for _, u := range b.cfg.WAN.Regions {
		near := b.cluster.Proxies(u)[0].ID
		for _, n := range b.cfg.WAN.Regions {
			args := [layouts][]string{
				layoutWarren:  {"-J", near, "sshd-" + n},
				layoutBefore:  {"-J", before, "sshd-" + n},
				layoutBastion: {"-J", regions.ExtraHost(n, bastionHost), regions.ExtraHost(n, nodeHost)},
				layoutDirect:  {regions.ExtraHost(n, nodeHost)},
			}
			for l := range layouts {
				out = append(out, &regionRoute{layout: l, user: u, node: n, args: args[l]})
			}
		}
	}
	return out
}

// dialNode connects from r's user host to its node's echo server.
func (b *regionsBed) dialNode(ctx context.Context, r *regionRoute) (net.Conn, error) {
	node := regions.ExtraHost(r.node, nodeHost)
	return b.cluster.Net.DialContext(ctx, regions.UserHost(r.user), "tcp", net.JoinHostPort(b.cluster.Net.Addr(node).String(), "7"))
}

// setup times one session: `ssh … true` from spawn to exit, or for the
// network a TCP connect.
func (b *regionsBed) setup(ctx context.Context, r *regionRoute) (time.Duration, error) {
	if r.layout != layoutNetwork {
		return b.clients[r.user].setup(ctx, r.args)
	}
	start := time.Now()
	conn, err := b.dialNode(ctx, r)
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	conn.Close()
	return d, nil
}

// keystrokes measures n one-byte round trips after a few to warm up, no
// two starting less than pace apart.
func (b *regionsBed) keystrokes(ctx context.Context, r *regionRoute, n int, pace time.Duration) (Durations, error) {
	var trip func() (time.Duration, error)
	if r.layout == layoutNetwork {
		conn, err := b.dialNode(ctx, r)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		buf := []byte{1}
		trip = func() (time.Duration, error) {
			start := time.Now()
			if _, err := conn.Write(buf); err != nil {
				return 0, err
			}
			_, err := io.ReadFull(conn, buf)
			return time.Since(start), err
		}
	} else {
		s, err := b.clients[r.user].startInteractive(ctx, r.args)
		if err != nil {
			return nil, err
		}
		defer s.close()
		trip = func() (time.Duration, error) {
			d, err := s.roundTrip()
			if err != nil {
				return 0, fmt.Errorf("round trip: %v: %s", err, strings.TrimSpace(s.stderr.String()))
			}
			return d, nil
		}
	}
	out := make(Durations, 0, n)
	for i := -min(10, n); i < n; i++ {
		start := time.Now()
		d, err := trip()
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			out = append(out, d)
		}
		if wait := time.Until(start.Add(pace)); wait > 0 && !sleepCtx(ctx, wait) {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// upload times n bytes from the first until the far end has them all.
func (b *regionsBed) upload(ctx context.Context, r *regionRoute, n int64, block []byte) (time.Duration, error) {
	if r.layout != layoutNetwork {
		return b.clients[r.user].upload(ctx, r.args, n, block)
	}
	conn, err := b.dialNode(ctx, r)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	if err := sendWAN(conn, n); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// each runs f on every route, cfg.Parallel at a time, and returns the
// first error.
func (b *regionsBed) each(ctx context.Context, routes []*regionRoute, f func(context.Context, *regionRoute) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, max(1, b.cfg.Parallel))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards first
		first error
	)
	for _, r := range routes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, r); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", r, err)
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// RunRegions measures, for every user region and node region, session
// setup, keystroke round trip and an upload over every layout, in one
// run on one emulated network.
func RunRegions(ctx context.Context, env Env, cfg RegionsConfig) (Report, error) {
	began, load := time.Now(), loadAverage()
	bed, err := startRegionsBed(ctx, env, cfg)
	if err != nil {
		return Report{}, err
	}
	defer bed.close()
	routes := bed.routes()
	// Every route works, and has opened a session once, before anything
	// is measured: the first session over a new peer link is slower.
	env.progress("checking %d routes", len(routes))
	if err := bed.each(ctx, routes, func(ctx context.Context, r *regionRoute) error {
		_, err := bed.setup(ctx, r)
		return err
	}); err != nil {
		// The client only says the forward failed; the proxies say why.
		return Report{}, fmt.Errorf("%w\n%s", err, bed.cluster.Logs(15))
	}
	for n := range cfg.Setups {
		env.progress("session setup %d/%d: %d routes, %d at a time", n+1, cfg.Setups, len(routes), cfg.Parallel)
		var mu sync.Mutex // guards the routes' setups
		if err := bed.each(ctx, routes, func(ctx context.Context, r *regionRoute) error {
			d, err := bed.setup(ctx, r)
			mu.Lock()
			r.setups = append(r.setups, d)
			mu.Unlock()
			return err
		}); err != nil {
			return Report{}, err
		}
	}
	env.progress("keystrokes: %d per route, %d routes at a time", cfg.RoundTrips, cfg.Parallel)
	if err := bed.each(ctx, routes, func(ctx context.Context, r *regionRoute) error {
		var err error
		r.rtts, err = bed.keystrokes(ctx, r, cfg.RoundTrips, cfg.Pace)
		return err
	}); err != nil {
		return Report{}, err
	}
	block := randomBlock()
	for i, r := range routes {
		env.progress("upload %d/%d: %s on %s → %s (%s)", i+1, len(routes), sizeName(cfg.BulkBytes), r.user, r.node, cfg.layoutName(r.layout))
		if r.upload, err = bed.upload(ctx, r, cfg.BulkBytes, block); err != nil {
			return Report{}, fmt.Errorf("%s: %w", r, err)
		}
	}
	rep := regionsReport(cfg, routes, time.Since(began))
	rep.Tables[0].Notes = append(rep.Tables[0].Notes, fmt.Sprintf("Load average (1 min) of the machine, other work included: %s at the start, %s at the end.", load, loadAverage()))
	return rep, nil
}

// loadAverage is the machine's 1-minute load average, or "?".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func regionsReport(cfg RegionsConfig, routes []*regionRoute, took time.Duration) Report {
	rs := cfg.WAN.Regions
	find := func(l int, u, n string) *regionRoute {
		for _, r := range routes {
			if r.layout == l && r.user == u && r.node == n {
				return r
			}
		}
		return nil
	}
	t := Table{Name: "regions", Title: "Users in every region to nodes in every region: each layout side by side",
		Header: []string{"user → node", "layout", "setup p50", "setup p90", "round trip p50", "round trip p99", "upload " + sizeName(cfg.BulkBytes)}}
	goals := Table{Name: "regions-goals", Title: "Goal: keystroke round trip through Warren within the network's own + 2 ms at p50 (reported, not asserted)",
		Header: []string{"user → node", "network p50", "Warren p50", "Warren − network", "met", cfg.layoutName(layoutBefore) + " p50", "saved by the nearest proxy", "ssh -J bastion p50"}}
	for _, u := range rs {
		for _, n := range rs {
			for l := range layouts {
				r := find(l, u, n)
				t.Rows = append(t.Rows, []string{u + " → " + n, cfg.layoutName(l),
					ms(r.setups.Median()), ms(r.setups.Quantile(0.9)),
					ms(r.rtts.Median()), ms(r.rtts.Quantile(0.99)),
					fmt.Sprintf("%.3g MiB/s (%.1f s)", float64(cfg.BulkBytes)/(1<<20)/r.upload.Seconds(), r.upload.Seconds())})
			}
			netw, w, bf, bs := find(layoutNetwork, u, n).rtts.Median(), find(layoutWarren, u, n).rtts.Median(),
				find(layoutBefore, u, n).rtts.Median(), find(layoutBastion, u, n).rtts.Median()
			goals.Rows = append(goals.Rows, []string{u + " → " + n, ms(netw), ms(w), signedMs(w - netw),
				yesNo(w <= netw+2*time.Millisecond), ms(bf), signedMs(bf - w), ms(bs)})
		}
	}
	var pairs []string
	for i, x := range rs {
		for _, y := range rs[i+1:] {
			pairs = append(pairs, fmt.Sprintf("%s↔%s %s", x, y, cfg.WAN.oneWay(x, y)))
		}
	}
	pairs = append(pairs, fmt.Sprintf("%s inside a region", cfg.WAN.Inside))
	t.Notes = []string{
		fmt.Sprintf("One run, %s from start to end (cluster start included). The emulated WAN (internal/wan, every host in its own network namespace, every packet through a user-space emulator): one-way delays %s, no rate cap, no loss, no jitter. Per region: Warren proxies (%d), a user host, a bastion host (stock sshd) and a node host running a stock sshd, a Warren agent that serves it as a `kind: tcp` resource (tunnels to 2 proxies, its own region's first), and a TCP echo server.",
			took.Round(time.Second), strings.Join(pairs, ", "), cfg.ProxiesPerRegion),
		fmt.Sprintf("Every SSH layout ends at the same stock sshd on the node's host: Warren as `ssh -J PROXY sshd-NODE` (the user's own region's first proxy, or %s's for everyone), the bastion as `ssh -J REGION-bastion REGION-node`, direct as `ssh REGION-node`; the stock OpenSSH client runs on the user's host, cipher %s on every SSH hop. The network row is the same hosts' TCP: setup is a TCP connect, a keystroke a byte echoed, the upload raw TCP. Warren and the bastion add a host on the way (the proxy, the bastion), and so one more hop inside a region: 1 ms of round trip by the emulator's own delays.",
			cfg.Before, Cipher),
		fmt.Sprintf("Setup: spawn of `ssh … true` to its exit, %d runs per route after one to warm up. Round trip: one byte through `ssh … cat`, %d samples after %d to warm up, no two less than %s apart. Setups and keystrokes measure %d routes at a time on this 2-core machine; uploads (`ssh … 'cat >/dev/null'` fed %s of random bytes, first byte to ssh's exit) run one at a time. OpenSSH's 2 MiB channel window runs end to end in every layout, so an upload is held to about 2 MiB per round trip.",
			cfg.Setups, cfg.RoundTrips, min(10, cfg.RoundTrips), cfg.Pace, cfg.Parallel, sizeName(cfg.BulkBytes)),
	}
	goals.Notes = []string{"Warren: the nearest proxy (the user's own region's). Saved: the single-region layout's p50 less Warren's."}

	cols := make([]string, len(rs))
	rows := make([]string, len(rs))
	for i, r := range rs {
		cols[i], rows[i] = "node "+r, "user "+r
	}
	matrices := func(value func(*regionRoute) float64) []plot.Matrix {
		var out []plot.Matrix
		for l := range layouts {
			m := plot.Matrix{Name: cfg.layoutName(l)}
			for _, u := range rs {
				var row []float64
				for _, n := range rs {
					row = append(row, value(find(l, u, n)))
				}
				m.Values = append(m.Values, row)
			}
			out = append(out, m)
		}
		return out
	}
	rtt := matrices(func(r *regionRoute) float64 { return float64(r.rtts.Median()) / 1e6 })
	setup := matrices(func(r *regionRoute) float64 { return float64(r.setups.Median()) / 1e6 })
	rate := matrices(func(r *regionRoute) float64 { return float64(cfg.BulkBytes) / (1 << 20) / r.upload.Seconds() })
	return Report{
		Scenario: "regions",
		Tables:   []Table{t, goals},
		Plots: []Plot{
			{Name: "regions-roundtrip", Render: func(w io.Writer) error {
				return plot.HeatMaps(w, "Keystroke round trip p50, user's region → node's region", "ms", rows, cols, rtt)
			}},
			{Name: "regions-setup", Render: func(w io.Writer) error {
				return plot.HeatMaps(w, "Session setup p50 (ssh … true; network: TCP connect)", "ms", rows, cols, setup)
			}},
			{Name: "regions-upload", Render: func(w io.Writer) error {
				return plot.HeatMaps(w, fmt.Sprintf("Upload of %s", sizeName(cfg.BulkBytes)), "MiB/s", rows, cols, rate)
			}},
		},
	}
}

// signedMs is d in ms with its sign.
func signedMs(d time.Duration) string {
	if d < 0 {
		return "−" + ms(-d)
	}
	return "+" + ms(d)
}

func regionsFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultRegionsConfig()
	if tiny {
		c = TinyRegionsConfig()
	}
	fs.IntVar(&c.ProxiesPerRegion, "proxies-per-region", c.ProxiesPerRegion, "Warren proxies in each region")
	fs.StringVar(&c.Before, "before", c.Before, "the region every user enters in the single-region layout")
	fs.IntVar(&c.Setups, "setups", c.Setups, "ssh … true runs per route")
	fs.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "keystroke round trips per route")
	mib := fs.Int64("bulk-mib", c.BulkBytes>>20, "MiB uploaded per route")
	fs.IntVar(&c.Parallel, "parallel", c.Parallel, "routes measured at once for setups and keystrokes")
	fs.DurationVar(&c.Pace, "pace", c.Pace, "least time between one route's keystrokes")
	return func(ctx context.Context, env Env) (Report, error) {
		c.BulkBytes = *mib << 20
		var errs []error
		if c.Setups < 1 || c.RoundTrips < 1 || c.BulkBytes < 1 || c.Parallel < 1 || c.ProxiesPerRegion < 1 {
			errs = append(errs, errors.New("--setups, --round-trips, --bulk-mib, --parallel and --proxies-per-region must be at least 1"))
		}
		if c.Pace < 0 {
			errs = append(errs, errors.New("--pace must not be negative"))
		}
		found := false
		for _, r := range c.WAN.Regions {
			found = found || r == c.Before
		}
		if !found {
			errs = append(errs, fmt.Errorf("--before %q is not one of the regions %v", c.Before, c.WAN.Regions))
		}
		if err := errors.Join(errs...); err != nil {
			return Report{}, fmt.Errorf("regions: %w", err)
		}
		return RunRegions(ctx, env, c)
	}
}
