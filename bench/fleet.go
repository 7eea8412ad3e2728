package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/internal/model"
)

// fleetConfig is one fleet worker: a process that hosts many real agents
// (package actors/agent), each with its own identity file and tunnel.
// A process may hold at most 20,000 open files on the benchmark machine
// and an agent holds two (its bbolt file and its tunnel), so the scale
// scenario spreads its agents over several fleets.
type fleetConfig struct {
	Agents      int           // how many agents this fleet runs
	Offset      int           // number of the first agent
	Prefix      string        // agent i is named and serves PREFIX-%05d
	Proxies     []string      // tunnel addresses; agent i's only seed is Proxies[i % len]
	Token       string        // join token
	Pin         string        // host CA pin
	Upstream    string        // host:port every agent's tcp resource points at
	DataDir     string        // agent i keeps its identity in DataDir/NAME
	Heartbeat   time.Duration // agents' heartbeat interval
	Health      time.Duration // agents' upstream health check interval
	Concurrency int           // agents starting (joining) at once
	Watch       time.Duration // how often tunnel states are looked at
	Events      bool          // print a line for every tunnel that comes up or goes down
	// Region, Connections and Probe are the agents' region,
	// connection_count and probe_interval.
	Region      string
	Connections int
	Probe       time.Duration
	// Resources, when set, makes agent i serve resource
	// ResourcePrefix-%05d numbered (Offset+i) mod Resources instead of its
	// own name: fleets in several regions with the same Resources serve
	// replicas of one set.
	Resources      int
	ResourcePrefix string
}

// fleetFlags parses a fleet worker's command line.
func fleetFlags(args []string, stderr io.Writer) (fleetConfig, error) {
	var c fleetConfig
	fs := flag.NewFlagSet("warren bench fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.Agents, "agents", 100, "how many agents to run")
	fs.IntVar(&c.Offset, "offset", 0, "number of the first agent (names are PREFIX-%05d)")
	fs.StringVar(&c.Prefix, "prefix", "scale", "agent and resource name prefix")
	proxies := fs.String("proxies", "", "comma-separated proxy tunnel addresses; agent i uses the (i mod count)th as its seed")
	fs.StringVar(&c.Token, "token", "", "join token")
	fs.StringVar(&c.Pin, "ca-pin", "", "host CA pin (SHA256 fingerprint)")
	fs.StringVar(&c.Upstream, "upstream", "", "host:port every agent's tcp resource forwards to")
	fs.StringVar(&c.DataDir, "data", "", "directory for the agents' identity files")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 5*time.Second, "agents' heartbeat interval")
	fs.DurationVar(&c.Health, "health", time.Minute, "agents' upstream health check interval")
	fs.IntVar(&c.Concurrency, "concurrency", 32, "agents starting at once")
	fs.DurationVar(&c.Watch, "watch", 100*time.Millisecond, "how often tunnel states are checked")
	fs.BoolVar(&c.Events, "events", false, "print a line \"tunnel NAME up|down UNIXNANO\" for every change")
	fs.StringVar(&c.Region, "region", "", "the agents' region")
	fs.IntVar(&c.Connections, "connections", 1, "the agents' connection_count")
	fs.DurationVar(&c.Probe, "probe", 30*time.Second, "the agents' probe_interval")
	fs.IntVar(&c.Resources, "resources", 0, "serve RESOURCE-PREFIX-%05d numbered (offset+i) mod this, instead of one resource per agent")
	fs.StringVar(&c.ResourcePrefix, "resource-prefix", "svc", "prefix of the shared resources (with --resources)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *proxies != "" {
		c.Proxies = strings.Split(*proxies, ",")
	}
	var errs []error
	if c.Agents < 1 {
		errs = append(errs, fmt.Errorf("--agents %d: need at least 1", c.Agents))
	}
	if c.Offset < 0 {
		errs = append(errs, fmt.Errorf("--offset %d: must not be negative", c.Offset))
	}
	if len(c.Proxies) == 0 {
		errs = append(errs, errors.New("--proxies: name at least one proxy tunnel address"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("--token: the agents need a join token"))
	}
	if _, _, err := net.SplitHostPort(c.Upstream); err != nil {
		errs = append(errs, fmt.Errorf("--upstream %q: not host:port", c.Upstream))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data: name a directory for the agents' identities"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency %d: need at least 1", c.Concurrency))
	}
	if c.Connections < 1 || c.Connections > 16 {
		errs = append(errs, fmt.Errorf("--connections %d: use 1 to 16", c.Connections))
	}
	if c.Resources < 0 {
		errs = append(errs, fmt.Errorf("--resources %d: must not be negative", c.Resources))
	}
	if c.Watch <= 0 || c.Heartbeat <= 0 || c.Health <= 0 || c.Probe <= 0 {
		errs = append(errs, errors.New("--watch, --heartbeat, --health and --probe must be positive"))
	}
	return c, errors.Join(errs...)
}

// agentName is the name of agent i, and of the one resource it serves.
func agentName(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// RunFleet is the fleet worker behind the hidden `warren bench fleet`
// command: it starts --agents real agents in this process, each serving
// one tcp resource named like the agent (PREFIX-00042), or one of
// --resources shared ones, that forwards to --upstream, with
// tunnel_strategy proxy_peering and --connections tunnels, the first
// proxy spread round-robin over --proxies. It runs until ctx ends (SIGTERM), then
// closes every agent.
//
// It reports on stdout, one line each, for the benchmark to read:
//
//	started N                 agents whose Start returned (joined or loaded their identity)
//	failed NAME: ERROR        an agent that could not start
//	failed-total N            once all have tried, if any failed
//	up N                      agents with a live tunnel now (printed on change)
//	tunnel NAME up|down NS    with --events: a tunnel came up or went down at NS (Unix ns)
//	tunnels NAME N NS         with --events and --connections above 1: the agent holds N tunnels from NS
//	proxies NAME IDS NS       with --events: the ids of the proxies the agent holds a tunnel to
//	                          (comma-separated, sorted; "-" for none) from NS
//	stopped N                 agents closed at the end
func RunFleet(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := fleetFlags(args, stdout)
	if err != nil {
		return err
	}
	// One actor system for all: each costs about 2.5 MiB (protoactor's
	// process registry), which 10,000 agents could not afford.
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer system.Shutdown()
	f := &fleet{cfg: cfg, system: system, out: stdout, agents: make([]atomic.Pointer[agent.Agent], cfg.Agents)}
	return f.run(ctx)
}

// fleet runs the agents of one worker process.
type fleet struct {
	cfg     fleetConfig
	system  *actor.ActorSystem            // shared by the agents
	agents  []atomic.Pointer[agent.Agent] // set once the agent has started
	started atomic.Int64                  // agents whose Start returned nil

	mu  sync.Mutex // guards out
	out io.Writer
}

func (f *fleet) printf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintf(f.out, format+"\n", args...)
}

func (f *fleet) run(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		f.watch(watchCtx)
	}()

	// Start agents, Concurrency at a time. Start returns once the agent
	// has its identity (joined, the first time); its tunnel comes up on
	// its own afterwards.
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, f.cfg.Concurrency)
		failed atomic.Int64
	)
starting:
	for i := range f.cfg.Agents {
		select {
		case <-ctx.Done():
			break starting
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f.start(ctx, i); err != nil {
				failed.Add(1)
				if ctx.Err() == nil {
					f.printf("failed %s: %v", agentName(f.cfg.Prefix, f.cfg.Offset+i), err)
				}
				return
			}
			f.started.Add(1)
		}()
	}
	wg.Wait()
	f.printf("started %d", f.started.Load())
	if n := failed.Load(); n > 0 {
		f.printf("failed-total %d", n)
	}

	<-ctx.Done()
	stopWatch()
	<-watched
	f.printf("stopped %d", f.closeAll())
	return nil
}

// start creates and starts agent i.
func (f *fleet) start(ctx context.Context, i int) error {
	name := agentName(f.cfg.Prefix, f.cfg.Offset+i)
	resource := name
	if f.cfg.Resources > 0 {
		resource = agentName(f.cfg.ResourcePrefix, (f.cfg.Offset+i)%f.cfg.Resources)
	}
	a, err := agent.New(agent.Config{
		Name:              name,
		DataDir:           filepath.Join(f.cfg.DataDir, name),
		Proxies:           []string{f.cfg.Proxies[(f.cfg.Offset+i)%len(f.cfg.Proxies)]},
		JoinToken:         f.cfg.Token,
		CAPin:             f.cfg.Pin,
		TunnelStrategy:    agent.StrategyPeering,
		ConnectionCount:   f.cfg.Connections,
		Region:            f.cfg.Region,
		ProbeInterval:     f.cfg.Probe,
		HeartbeatInterval: f.cfg.Heartbeat,
		HealthInterval:    f.cfg.Health,
		Resources:         []agent.ResourceConfig{{Name: resource, Kind: model.KindTCP, Addr: f.cfg.Upstream}},
		Logger:            slog.New(slog.DiscardHandler),
		ActorSystem:       f.system,
	})
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	f.agents[i].Store(a)
	return nil
}

// watch prints how many agents have started and how many tunnels are up
// whenever that changes (at most once per 250 ms) and, with Events, every
// single tunnel change, until ctx ends.
func (f *fleet) watch(ctx context.Context) {
	t := time.NewTicker(f.cfg.Watch)
	defer t.Stop()
	up := make([]bool, len(f.agents))
	tunnels := make([]int, len(f.agents))
	holders := make([]string, len(f.agents))
	count, printed, startedPrinted := 0, -1, int64(0)
	var lastPrint time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for i := range f.agents {
			a := f.agents[i].Load()
			if a == nil {
				continue
			}
			n := a.Tunnels()
			if f.cfg.Events && f.cfg.Connections > 1 && n != tunnels[i] {
				f.printf("tunnels %s %d %d", agentName(f.cfg.Prefix, f.cfg.Offset+i), n, now.UnixNano())
			}
			tunnels[i] = n
			if f.cfg.Events {
				ids := strings.Join(a.TunnelProxies(), ",")
				if ids == "" {
					ids = "-"
				}
				if ids != holders[i] {
					f.printf("proxies %s %s %d", agentName(f.cfg.Prefix, f.cfg.Offset+i), ids, now.UnixNano())
					holders[i] = ids
				}
			}
			if is := n > 0; is != up[i] {
				up[i] = is
				state := "down"
				if is {
					count++
					state = "up"
				} else {
					count--
				}
				if f.cfg.Events {
					f.printf("tunnel %s %s %d", agentName(f.cfg.Prefix, f.cfg.Offset+i), state, now.UnixNano())
				}
			}
		}
		if now.Sub(lastPrint) < 250*time.Millisecond {
			continue
		}
		if n := f.started.Load(); n != startedPrinted {
			f.printf("started %d", n)
			startedPrinted, lastPrint = n, now
		}
		if count != printed {
			f.printf("up %d", count)
			printed, lastPrint = count, now
		}
	}
}

// closeAll closes every started agent, 64 at a time, and returns how
// many it closed.
func (f *fleet) closeAll() int {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 64)
		closed atomic.Int64
	)
	for i := range f.agents {
		a := f.agents[i].Load()
		if a == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = a.Close()
			closed.Add(1)
		}()
	}
	wg.Wait()
	return int(closed.Load())
}
