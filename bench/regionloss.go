package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/regions"
	"github.com/warren-proxy/warren/transport/pki"
)

// The region-loss scenario loses a whole region while its agents serve
// resources that have replicas in the other regions. It runs on the
// emulated WAN of internal/regions (network namespaces, as root):
//
//	region  proxies (zones a, b)        fleet host            users
//	us      proxy-us-1, proxy-us-2      us-fleet: N agents     us-user
//	eu      proxy-eu-1, proxy-eu-2      eu-fleet: N agents     eu-user
//	ap      proxy-ap-1, proxy-ap-2      ap-fleet: N agents     ap-user
//
// One-way delays us–eu 40 ms, us–ap 60 ms, eu–ap 90 ms, 0.5 ms inside a
// region. Each fleet is a `warren bench fleet` process of real agents in
// its region (connection_count 2, a short probe_interval), agent i
// serving tcp resource svc-(i mod M): every resource has replicas in
// every region. The steps, one after the other on one cluster:
//
//  1. steady state: every agent holds both its tunnels in its own region;
//  2. SIGKILL proxy-us-1: its agents open their second tunnel elsewhere,
//     then, once it is started again, move back;
//  3. SIGKILL both proxies of the victim region (eu) while users of the
//     other regions open short sessions to every resource: the victim's
//     agents re-home to the nearest other region;
//  4. the victim's proxies start again: its agents go home.
//
// Where every agent's tunnels are comes from the fleets' event lines
// (`proxies NAME IDS NS`), sampled every 100 ms in the fleet processes.

// RegionLossConfig sizes the region-loss scenario.
type RegionLossConfig struct {
	// AgentsPerRegion is each region's fleet; Resources (M) the number of
	// distinct resources every fleet serves replicas of.
	AgentsPerRegion, Resources int
	// Probe is the agents' probe_interval (the home rule's Settle; Dwell
	// is three of it).
	Probe time.Duration
	// Victim is the region lost.
	Victim string
	// ProxyOutage is how long proxy-us-1 stays dead in step 2; Outage how
	// long the victim region does in step 3; Return how long step 4 waits
	// for its agents to come home (and watches for flapping after).
	ProxyOutage, Outage, Return time.Duration
	// Clients SSH connections per user region (over its two proxies)
	// carry Workers concurrent short sessions, Pause between one worker's
	// sessions, from Lead before the region's loss until Return ends.
	Clients, Workers int
	Pause, Lead      time.Duration
	// Gossip is the proxies' membership profile.
	Gossip string
	// Setup bounds the wait for every agent to be home at the start.
	Setup time.Duration
}

// DefaultRegionLossConfig is the full size, 1,200 agents: on the 2-core
// benchmark machine it did not settle (bench/RESULTS.md); 100 per region
// took 2m34s.
func DefaultRegionLossConfig() RegionLossConfig {
	return RegionLossConfig{
		AgentsPerRegion: 400, Resources: 100, Probe: 5 * time.Second, Victim: "eu",
		ProxyOutage: 20 * time.Second, Outage: 40 * time.Second, Return: 45 * time.Second,
		Clients: 4, Workers: 8, Pause: 50 * time.Millisecond, Lead: 10 * time.Second,
		Gossip: model.ProfileWAN, Setup: 6 * time.Minute,
	}
}

// TinyRegionLossConfig only checks that the scenario runs (CI): under a
// minute.
func TinyRegionLossConfig() RegionLossConfig {
	return RegionLossConfig{
		AgentsPerRegion: 10, Resources: 5, Probe: 2 * time.Second, Victim: "eu",
		ProxyOutage: 5 * time.Second, Outage: 12 * time.Second, Return: 12 * time.Second,
		Clients: 2, Workers: 2, Pause: 50 * time.Millisecond, Lead: 3 * time.Second,
		Gossip: model.ProfileWAN, Setup: 2 * time.Minute,
	}
}

// regionLossRegions and their one-way delays: the regions test's matrix.
var (
	regionLossRegions = []string{"us", "eu", "ap"}
	regionLossDelays  = map[[2]string]time.Duration{
		{"us", "eu"}: 40 * time.Millisecond, {"us", "ap"}: 60 * time.Millisecond, {"eu", "ap"}: 90 * time.Millisecond,
	}
)

// Validate reports every problem of the config at once.
func (c RegionLossConfig) Validate() error {
	var errs []error
	if c.AgentsPerRegion < 1 || c.AgentsPerRegion > 8000 {
		errs = append(errs, fmt.Errorf("--agents %d: use 1 to 8000 per region (one fleet process each)", c.AgentsPerRegion))
	}
	if c.Resources < 1 || c.Resources > c.AgentsPerRegion {
		errs = append(errs, fmt.Errorf("--resources %d: use 1 to --agents, so that every region serves every resource", c.Resources))
	}
	if c.Probe < 100*time.Millisecond || c.Probe > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--probe %s: use 100ms to 10m (the agents' probe_interval)", c.Probe))
	}
	if !slices.Contains(regionLossRegions, c.Victim) || c.Victim == "us" {
		errs = append(errs, fmt.Errorf("--victim %q: name eu or ap (step 2 kills a proxy of us)", c.Victim))
	}
	if c.ProxyOutage < time.Second || c.Outage < time.Second || c.Return < time.Second || c.Lead < time.Second || c.Setup < time.Second {
		errs = append(errs, errors.New("--proxy-outage, --outage, --return, --lead and --setup must be at least 1s"))
	}
	if c.Clients < 1 || c.Workers < 1 || c.Pause < 0 {
		errs = append(errs, errors.New("--clients and --workers must be at least 1, --pause not negative"))
	}
	if err := model.CheckProfile(c.Gossip); err != nil {
		errs = append(errs, fmt.Errorf("--gossip: %w", err))
	}
	return errors.Join(errs...)
}

func regionLossFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultRegionLossConfig()
	if tiny {
		c = TinyRegionLossConfig()
	}
	fs.IntVar(&c.AgentsPerRegion, "agents", c.AgentsPerRegion, "agents per region (one fleet process each)")
	fs.IntVar(&c.Resources, "resources", c.Resources, "distinct resources, each served by every region")
	fs.DurationVar(&c.Probe, "probe", c.Probe, "the agents' probe_interval")
	fs.StringVar(&c.Victim, "victim", c.Victim, "the region lost: eu or ap")
	fs.DurationVar(&c.ProxyOutage, "proxy-outage", c.ProxyOutage, "how long proxy-us-1 stays dead")
	fs.DurationVar(&c.Outage, "outage", c.Outage, "how long the victim region stays dead")
	fs.DurationVar(&c.Return, "return", c.Return, "how long the victim's agents are watched after its proxies start again")
	fs.IntVar(&c.Clients, "clients", c.Clients, "SSH connections per user region")
	fs.IntVar(&c.Workers, "workers", c.Workers, "concurrent sessions per user region")
	fs.DurationVar(&c.Pause, "pause", c.Pause, "pause between one worker's sessions")
	fs.DurationVar(&c.Lead, "lead", c.Lead, "how long the load runs before the region's loss")
	fs.StringVar(&c.Gossip, "gossip", c.Gossip, "the proxies' membership profile")
	fs.DurationVar(&c.Setup, "setup", c.Setup, "how long to wait for every agent to be home at the start")
	return func(ctx context.Context, env Env) (Report, error) { return RunRegionLoss(ctx, env, c) }
}

// regionLossBed is the running cluster, its fleets and what they report.
type regionLossBed struct {
	cfg      RegionLossConfig
	env      Env
	dir      string
	c        *regions.Cluster
	fleets   map[string]*Proc
	events   *fleetEvents
	regionOf map[string]string // proxy id → region
	stop     cleanups
}

// proxyRegion returns the region of proxy id ("?" if unknown).
func (b *regionLossBed) proxyRegion(id string) string {
	if r, ok := b.regionOf[id]; ok {
		return r
	}
	return "?"
}

// inRegion is a condition on an agent's tunnels: at least n, each to a
// proxy of a region in want (or, with not, of none of them).
func (b *regionLossBed) inRegion(n int, not bool, want ...string) func([]string) bool {
	return func(ids []string) bool {
		if len(ids) < n {
			return false
		}
		for _, id := range ids {
			if slices.Contains(want, b.proxyRegion(id)) == not {
				return false
			}
		}
		return true
	}
}

// startRegionLossBed starts the cluster, an echo server and a fleet on
// every region's fleet host, and follows the fleets' events.
func startRegionLossBed(ctx context.Context, env Env, cfg RegionLossConfig) (_ *regionLossBed, err error) {
	b := &regionLossBed{cfg: cfg, env: env, fleets: map[string]*Proc{}, events: newFleetEvents(), regionOf: map[string]string{}}
	defer func() {
		if err != nil {
			b.stop.run()
		}
	}()
	if b.dir, err = env.scratch("region-loss"); err != nil {
		return nil, err
	}
	began := time.Now()
	b.c, err = regions.Start(ctx, regions.Spec{
		Bin: env.Binary, Dir: b.dir, Regions: regionLossRegions, ProxiesPerRegion: 2, AgentsPerRegion: 1,
		Delays: regionLossDelays, Inside: 500 * time.Microsecond, Gossip: cfg.Gossip, ExtraHosts: []string{"fleet"},
	})
	if err != nil {
		return nil, fmt.Errorf("region-loss: %w (the emulated WAN needs root, iproute2 and /dev/net/tun)", err)
	}
	b.stop.add(func() { b.c.Close() })
	env.progress("region-loss: 6 proxies in 3 regions up in %s (logs in %s)", time.Since(began).Round(time.Millisecond), b.dir)
	for _, r := range regionLossRegions {
		for _, p := range b.c.Proxies(r) {
			b.regionOf[p.ID] = r
		}
	}
	token, err := b.joinToken()
	if err != nil {
		return nil, err
	}
	fctx, stopFollow := context.WithCancel(context.Background())
	var following sync.WaitGroup
	b.stop.add(func() { stopFollow(); following.Wait() })
	for _, r := range regionLossRegions {
		host := r + "-fleet"
		var ln net.Listener
		if err := b.c.Net.Do(host, func() (err error) {
			ln, err = net.Listen("tcp", b.c.Net.Addr(host).String()+":0")
			return err
		}); err != nil {
			return nil, err
		}
		served := make(chan struct{})
		go func() { defer close(served); echo.Serve(ln, nil) }()
		b.stop.add(func() { ln.Close(); <-served })
		var tunnels []string
		for _, p := range b.c.Proxies(r) {
			tunnels = append(tunnels, p.Tunnel)
		}
		args := []string{"bench", "fleet", "--agents", strconv.Itoa(cfg.AgentsPerRegion), "--prefix", "agent-" + r,
			"--proxies", strings.Join(tunnels, ","), "--token", token, "--ca-pin", b.c.H.Pin,
			"--upstream", ln.Addr().String(), "--data", filepath.Join(b.dir, "fleet-"+r),
			"--region", r, "--connections", "2", "--probe", cfg.Probe.String(),
			"--resources", strconv.Itoa(cfg.Resources), "--resource-prefix", "svc", "--events", "--concurrency", "16"}
		cmd := b.c.Command(host, env.Binary, args...)
		cmd.Name, cmd.Log = "fleet-"+r, filepath.Join(b.dir, "fleet-"+r+".log")
		p, err := harness.Start(cmd)
		if err != nil {
			return nil, err
		}
		b.stop.add(p.Kill)
		b.fleets[r] = p
		following.Add(1)
		go func() { defer following.Done(); b.events.follow(fctx, r, cmd.Log) }()
	}
	return b, nil
}

// fleetFailure is the failure of a fleet that ended, if any.
func (b *regionLossBed) fleetFailure() error {
	for r, p := range b.fleets {
		if p.Exited() {
			return fmt.Errorf("fleet of %s ended: %v (log %s)", r, p.Failure(), filepath.Join(b.dir, "fleet-"+r+".log"))
		}
	}
	return nil
}

// waitAll waits until every agent of the regions satisfies ok, or
// timeout; it returns how many do not.
func (b *regionLossBed) waitAll(ctx context.Context, timeout time.Duration, regs []string, ok func(region string) func([]string) bool) (int, error) {
	deadline, said := time.Now().Add(timeout), time.Now()
	for {
		missing := 0
		for _, r := range regs {
			names := b.events.agents(r)
			missing += b.cfg.AgentsPerRegion - len(names)
			now := time.Now()
			for _, a := range names {
				if !ok(r)(b.events.at(a, now)) {
					missing++
				}
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing, nil
		}
		if time.Since(said) >= 15*time.Second {
			b.env.progress("region-loss: %d agents of %v not there yet", missing, regs)
			said = time.Now()
		}
		if err := b.fleetFailure(); err != nil {
			return missing, err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return missing, ctx.Err()
		}
	}
}

// step is one measured re-homing: for each agent concerned, the time from
// the fault (or the restart) until its tunnels satisfied the condition.
type step struct {
	name   string
	agents int
	took   Durations // of those that did
	where  string    // the regions their new tunnels went to
	moves  string    // tunnel moves per agent, mean / max (return steps)
	flaps  int       // agents that left home again after reaching it
}

// measure times agents' first state satisfying ok after t.
func (b *regionLossBed) measure(name string, agents []string, t time.Time, ok func([]string) bool) step {
	s := step{name: name, agents: len(agents), where: "-", moves: "-"}
	for _, a := range agents {
		if d := b.events.firstAfter(a, t, ok); d >= 0 {
			s.took = append(s.took, d)
		}
	}
	slices.Sort(s.took)
	return s
}

// placement counts the tunnels of agents at t by their proxies' region,
// as "us 800, eu 2".
func (b *regionLossBed) placement(agents []string, t time.Time, skip string) string {
	n := map[string]int{}
	for _, a := range agents {
		for _, id := range b.events.at(a, t) {
			n[b.proxyRegion(id)]++
		}
	}
	var parts []string
	for _, r := range regionLossRegions {
		if n[r] > 0 && r != skip {
			parts = append(parts, fmt.Sprintf("%s %d", r, n[r]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// moves counts, per agent, the proxies it newly held after t (a move of
// one tunnel is one), and the agents that, once both their tunnels were
// in region, held one elsewhere again (flapping).
func (b *regionLossBed) moves(s *step, agents []string, t time.Time, region string) {
	home := b.inRegion(2, false, region)
	total, most := 0, 0
	for _, a := range agents {
		prev, changes := b.events.since(a, t)
		n, wasHome := 0, false
		for _, h := range changes {
			for _, id := range h.ids {
				if !slices.Contains(prev, id) {
					n++
				}
			}
			if wasHome && slices.ContainsFunc(h.ids, func(id string) bool { return b.proxyRegion(id) != region }) {
				s.flaps++
				wasHome = false
			}
			wasHome = wasHome || home(h.ids)
			prev = h.ids
		}
		total, most = total+n, max(most, n)
	}
	if len(agents) > 0 {
		s.moves = fmt.Sprintf("%.2f / %d", float64(total)/float64(len(agents)), most)
	}
}

// churn counts, between from and to, the tunnels the victim region's
// agents opened and those the other regions' agents lost: a re-homing
// storm that starved the live proxies would cost the latter tunnels.
func (b *regionLossBed) churn(from, to time.Time) (opened, lost int) {
	for _, r := range regionLossRegions {
		for _, a := range b.events.agents(r) {
			prev, changes := b.events.since(a, from)
			for _, h := range changes {
				if h.at.After(to) {
					break
				}
				if r == b.cfg.Victim {
					for _, id := range h.ids {
						if !slices.Contains(prev, id) {
							opened++
						}
					}
				} else {
					for _, id := range prev {
						if !slices.Contains(h.ids, id) {
							lost++
						}
					}
				}
				prev = h.ids
			}
		}
	}
	return opened, lost
}

// gossipWatch polls the live proxies' views of each other while a region
// is lost: a live proxy another live one calls anything but alive is a
// false death (gossip starved by the re-homing storm).
type gossipWatch struct {
	mu        sync.Mutex // guards the fields below
	falseDead []string   // "+1.2s proxy-us-1 sees proxy-ap-2 suspect"
	polls     int
	// victimGone is when every live proxy first listed none of the
	// victim's proxies as alive.
	victimGone time.Time
}

func (b *regionLossBed) watchGossip(ctx context.Context, from time.Time, w *gossipWatch) {
	for sleepCtx(ctx, 250*time.Millisecond) {
		gone := true
		for _, r := range regionLossRegions {
			if r == b.cfg.Victim {
				continue
			}
			for _, p := range b.c.Proxies(r) {
				st, err := b.c.H.Status(p.Proxy)
				if err != nil {
					gone = false
					continue
				}
				w.mu.Lock()
				w.polls++
				for _, m := range st {
					switch {
					case b.proxyRegion(m.ID) == b.cfg.Victim:
						if m.State == "alive" {
							gone = false
						}
					case m.State != "alive" && len(w.falseDead) < 20:
						w.falseDead = append(w.falseDead, fmt.Sprintf("+%s %s sees %s %s", time.Since(from).Round(100*time.Millisecond), p.ID, m.ID, m.State))
					}
				}
				w.mu.Unlock()
			}
		}
		w.mu.Lock()
		if gone && w.victimGone.IsZero() {
			w.victimGone = time.Now()
		}
		w.mu.Unlock()
	}
}

// userLoad opens short sessions (a byte there and back over a
// direct-tcpip channel) to every resource in turn from one region's user
// host through that region's proxies.
type userLoad struct {
	region   string
	clients  []*ssh.Client
	via      []string   // the proxy of each client
	mu       sync.Mutex // guards sessions
	sessions []Session
}

func (b *regionLossBed) dialUsers(region string) (*userLoad, error) {
	l := &userLoad{region: region}
	ps := b.c.Proxies(region)
	for i := range b.cfg.Clients {
		p := ps[i%len(ps)]
		c, err := b.dialUser(region, p)
		if err != nil {
			return l, err
		}
		l.clients = append(l.clients, c)
		l.via = append(l.via, p.ID)
	}
	return l, nil
}

// dialUser connects region's user (alice, an admin) to proxy p.
func (b *regionLossBed) dialUser(region string, p *regions.Proxy) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User: b.c.User.Name, Auth: []ssh.AuthMethod{ssh.PublicKeys(b.c.User.Signer)},
		HostKeyCallback: pki.HostKeyCallback([]ssh.PublicKey{b.c.H.Auth.HostCA.PublicKey()}, nil, nil),
		Timeout:         15 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := b.c.Net.DialContext(ctx, region+"-user", "tcp", p.User)
	if err != nil {
		return nil, fmt.Errorf("connect %s's user to %s: %w", region, p.ID, err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, p.User, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh to %s as %s: %w", p.ID, b.c.User.Name, err)
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// joinToken makes the fleets' join token: one that grants the svc-*
// names, since a name one agent claimed is served by another only if its
// token grants it (the regions' replicas of one resource).
func (b *regionLossBed) joinToken() (string, error) {
	p := b.c.Proxies("us")[0]
	c, err := b.dialUser("us", p)
	if err != nil {
		return "", err
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	out, err := sess.Output("token add --ttl 24h --resources svc-*")
	if err != nil {
		return "", fmt.Errorf("create a join token on %s: %w", p.ID, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (l *userLoad) close() {
	for _, c := range l.clients {
		c.Close()
	}
}

// run drives Workers sessions at once until ctx ends.
func (l *userLoad) run(ctx context.Context, cfg RegionLossConfig) {
	var (
		wg   sync.WaitGroup
		next int
		mu   sync.Mutex
	)
	for range cfg.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				n := next
				next++
				mu.Unlock()
				target := fmt.Sprintf("svc-%05d:7", n%cfg.Resources)
				s := oneSession(l.clients[n%len(l.clients)], target, 10*time.Second)
				if s.Err != nil {
					s.Err = fmt.Errorf("%s via %s: %w", target, l.via[n%len(l.clients)], s.Err)
				}
				l.mu.Lock()
				l.sessions = append(l.sessions, s)
				l.mu.Unlock()
				sleepCtx(ctx, cfg.Pause)
			}
		})
	}
	wg.Wait()
}

// regionLossResult is what one run measured.
type regionLossResult struct {
	cfg       RegionLossConfig
	setup     time.Duration // fleets started until every agent was home
	steady    [][]string    // per region: agents, tunnels per region, home, proxies' count
	steps     []step
	sessions  []Session // the other regions' users' sessions
	kill      time.Time // the victim's loss
	restarted time.Time // the victim's proxies ready again
	gossip    *gossipWatch
	rejoined  time.Duration // StartRegion until every proxy saw every other
	// During the outage: tunnels the victim's agents opened, and tunnels
	// the other regions' agents lost.
	opened, lost int
	timeline     []float64 // seconds since steady state
	perRegion    map[string][]float64
	events       []string // "+12.3 s: SIGKILL proxy-us-1"
	failed       []string // the fleets' failed agents
}

// RunRegionLoss runs the scenario once.
func RunRegionLoss(ctx context.Context, env Env, cfg RegionLossConfig) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	began := time.Now()
	b, err := startRegionLossBed(ctx, env, cfg)
	if err != nil {
		return Report{}, err
	}
	defer b.stop.run()
	res, err := b.run(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("region-loss: %w (logs in %s)", err, b.dir)
	}
	env.progress("region-loss: done in %s", time.Since(began).Round(time.Second))
	return regionLossReport(res), nil
}

func (b *regionLossBed) run(ctx context.Context) (*regionLossResult, error) {
	cfg := b.cfg
	res := &regionLossResult{cfg: cfg, gossip: &gossipWatch{}, perRegion: map[string][]float64{}}
	home := func(r string) func([]string) bool { return b.inRegion(2, false, r) }

	// 1. Steady state.
	fleetsAt := time.Now()
	b.env.progress("region-loss: %d fleets of %d agents started; waiting until every agent holds 2 tunnels in its region", len(b.fleets), cfg.AgentsPerRegion)
	if missing, err := b.waitAll(ctx, cfg.Setup, regionLossRegions, home); err != nil || missing > 0 {
		return nil, fmt.Errorf("steady state: %d agents not home after %s (%v)", missing, cfg.Setup, err)
	}
	// And every proxy lists every resource with every replica healthy.
	want := 3 * (cfg.AgentsPerRegion / cfg.Resources)
	replicas := map[string][2]int{} // proxy region → fewest, most healthy replicas of a resource
	err := waitUntil(ctx, cfg.Setup, time.Second, "every replica healthy on every proxy", func() bool {
		clear(replicas)
		for _, r := range regionLossRegions {
			mm := [2]int{-1, 0}
			for _, p := range b.c.Proxies(r) {
				sums, err := b.c.H.Resources(p.Proxy)
				if err != nil {
					return false
				}
				n := 0
				for _, sum := range sums {
					if strings.HasPrefix(sum.Name, "svc-") {
						n++
						if mm[0] < 0 || sum.Healthy < mm[0] {
							mm[0] = sum.Healthy
						}
						mm[1] = max(mm[1], sum.Healthy)
					}
				}
				if n < cfg.Resources {
					mm[0] = 0
				}
			}
			replicas[r] = mm
			if mm[0] < want {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("%w: healthy replicas per resource by proxy region %v, want %d", err, replicas, want)
	}
	steadyAt := time.Now()
	res.setup = steadyAt.Sub(fleetsAt)
	b.env.progress("region-loss: every agent home %s after the fleets started", res.setup.Round(time.Millisecond))
	local := map[string]int{}
	for _, r := range regionLossRegions {
		for _, p := range b.c.Proxies(r) {
			st, err := b.c.H.Status(p.Proxy)
			if err != nil {
				return nil, err
			}
			for _, m := range st {
				if m.ID == p.ID {
					local[r] += m.LocalAgents
				}
			}
		}
	}
	for _, r := range regionLossRegions {
		agents := b.events.agents(r)
		homed := 0
		for _, a := range agents {
			if home(r)(b.events.at(a, steadyAt)) {
				homed++
			}
		}
		res.steady = append(res.steady, []string{r, strconv.Itoa(len(agents)), b.placement(agents, steadyAt, ""),
			fmt.Sprintf("%d of %d", homed, len(agents)), strconv.Itoa(local[r]),
			fmt.Sprintf("%d–%d of %d", replicas[r][0], replicas[r][1], want)})
	}
	mark := func(format string, args ...any) time.Time {
		now := time.Now()
		res.events = append(res.events, fmt.Sprintf("+%.1f s: %s", now.Sub(steadyAt).Seconds(), fmt.Sprintf(format, args...)))
		b.env.progress("region-loss: "+format, args...)
		return now
	}
	if !sleepCtx(ctx, 2*time.Second) {
		return nil, ctx.Err()
	}

	// 2. One proxy.
	victimProxy := b.c.Proxies("us")[0]
	var held []string
	for _, a := range b.events.agents("us") {
		if slices.Contains(b.events.at(a, time.Now()), victimProxy.ID) {
			held = append(held, a)
		}
	}
	victimProxy.Proc.Kill()
	killP := mark("SIGKILL %s (%d us agents hold a tunnel there)", victimProxy.ID, len(held))
	notDead := func(ids []string) bool { return len(ids) >= 2 && !slices.Contains(ids, victimProxy.ID) }
	if !sleepCtx(ctx, cfg.ProxyOutage) {
		return nil, ctx.Err()
	}
	s := b.measure(fmt.Sprintf("SIGKILL %s: its agents hold 2 tunnels again", victimProxy.ID), held, killP, notDead)
	s.where = "second tunnel: " + b.placement(held, time.Now(), "us")
	res.steps = append(res.steps, s)
	b.env.progress("region-loss: %d of %d agents held 2 tunnels again; p50 %s, max %s; %s", len(s.took), s.agents, ms(s.took.Median()), ms(s.took.Quantile(1)), s.where)
	if err := b.c.StartRegion(ctx, "us"); err != nil {
		return nil, err
	}
	backP := mark("%s started again and ready", victimProxy.ID)
	if _, err := b.waitAll(ctx, cfg.Return, []string{"us"}, home); err != nil {
		return nil, err
	}
	s = b.measure(fmt.Sprintf("%s back: its agents both tunnels home", victimProxy.ID), held, backP, home("us"))
	s.where = "us"
	b.moves(&s, held, backP, "us")
	res.steps = append(res.steps, s)
	b.env.progress("region-loss: %d of %d agents home again; p50 %s, max %s", len(s.took), s.agents, ms(s.took.Median()), ms(s.took.Quantile(1)))
	if missing, err := b.waitAll(ctx, time.Minute, regionLossRegions, home); err != nil || missing > 0 {
		return nil, fmt.Errorf("before the region's loss: %d agents not home after a minute (%v)", missing, err)
	}

	// 3. The region: load first.
	var loads []*userLoad
	defer func() {
		for _, l := range loads {
			l.close()
		}
	}()
	for _, r := range regionLossRegions {
		if r == cfg.Victim {
			continue
		}
		l, err := b.dialUsers(r)
		loads = append(loads, l)
		if err != nil {
			return nil, err
		}
	}
	lctx, stopLoad := context.WithCancel(ctx)
	var loading sync.WaitGroup
	defer func() { stopLoad(); loading.Wait() }() // before the clients close
	for _, l := range loads {
		loading.Go(func() { l.run(lctx, cfg) })
	}
	mark("load: %d sessions at once from each of %d user regions", cfg.Workers, len(loads))
	if !sleepCtx(ctx, cfg.Lead) {
		return nil, ctx.Err()
	}
	victims := b.events.agents(cfg.Victim)
	gctx, stopGossip := context.WithCancel(ctx)
	var watching sync.WaitGroup
	defer func() { stopGossip(); watching.Wait() }()
	b.c.KillRegion(cfg.Victim)
	res.kill = mark("SIGKILL every proxy of %s", cfg.Victim)
	watching.Go(func() { b.watchGossip(gctx, res.kill, res.gossip) })
	if !sleepCtx(ctx, cfg.Outage) {
		return nil, ctx.Err()
	}
	elsewhere := b.inRegion(1, true, cfg.Victim)
	s = b.measure(fmt.Sprintf("SIGKILL %s: its agents hold a tunnel elsewhere", cfg.Victim), victims, res.kill, elsewhere)
	first := map[string]int{}
	for _, a := range victims {
		if d := b.events.firstAfter(a, res.kill, elsewhere); d >= 0 {
			for _, id := range b.events.at(a, res.kill.Add(d)) {
				first[b.proxyRegion(id)]++
			}
		}
	}
	var parts []string
	for _, r := range regionLossRegions {
		if first[r] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, first[r]))
		}
	}
	s.where = "first tunnels: " + strings.Join(parts, ", ")
	res.steps = append(res.steps, s)
	b.env.progress("region-loss: %d of %d %s agents re-homed; p50 %s, p99 %s, max %s; %s", len(s.took), s.agents, cfg.Victim, ms(s.took.Median()), ms(s.took.Quantile(0.99)), ms(s.took.Quantile(1)), s.where)
	s = b.measure(fmt.Sprintf("SIGKILL %s: its agents hold 2 tunnels elsewhere", cfg.Victim), victims, res.kill, b.inRegion(2, true, cfg.Victim))
	s.where = "at the end of the outage: " + b.placement(victims, time.Now(), "")
	res.steps = append(res.steps, s)

	res.opened, res.lost = b.churn(res.kill, time.Now())

	// 4. The region returns.
	if err := b.c.StartRegion(ctx, cfg.Victim); err != nil {
		return nil, err
	}
	res.restarted = mark("%s's proxies started again and ready", cfg.Victim)
	stopGossip()
	watching.Wait()
	if err := b.c.WaitMembers(ctx); err != nil {
		return nil, err
	}
	res.rejoined = time.Since(res.restarted)
	if !sleepCtx(ctx, cfg.Return-res.rejoined) {
		return nil, ctx.Err()
	}
	stopLoad()
	loading.Wait()
	end := mark("load stopped")
	s = b.measure(fmt.Sprintf("%s back: its agents both tunnels home", cfg.Victim), victims, res.restarted, home(cfg.Victim))
	s.where = "at the end: " + b.placement(victims, end, "")
	b.moves(&s, victims, res.restarted, cfg.Victim)
	res.steps = append(res.steps, s)
	b.env.progress("region-loss: %d of %d %s agents home again; p50 %s, max %s; moves per agent %s, %d left home again", len(s.took), s.agents, cfg.Victim, ms(s.took.Median()), ms(s.took.Quantile(1)), s.moves, s.flaps)

	for _, l := range loads {
		res.sessions = append(res.sessions, l.sessions...)
	}
	// The timeline, every 500 ms from steady state to the end.
	all := append(append(b.events.agents("us"), b.events.agents("eu")...), b.events.agents("ap")...)
	for t := steadyAt.Add(-2 * time.Second); !t.After(end); t = t.Add(500 * time.Millisecond) {
		res.timeline = append(res.timeline, t.Sub(steadyAt).Seconds())
		n := map[string]float64{}
		for _, a := range all {
			for _, id := range b.events.at(a, t) {
				n[b.proxyRegion(id)]++
			}
		}
		for _, r := range regionLossRegions {
			res.perRegion[r] = append(res.perRegion[r], n[r])
		}
	}
	b.events.mu.Lock()
	res.failed = slices.Clone(b.events.failed)
	b.events.mu.Unlock()
	return res, nil
}
