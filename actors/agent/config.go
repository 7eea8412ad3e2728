package agent

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Config is an agent's configuration, read from agent.yaml.
type Config struct {
	// Name is the id the agent asks for when it joins (a random suffix is
	// added); default: the host name.
	Name string `yaml:"name"`
	// DataDir holds the agent's identity (bbolt).
	DataDir string `yaml:"data_dir"`
	// Proxies are tunnel addresses (host:port) of proxies or of a load
	// balancer in front of them; the first reachable one is used.
	Proxies []string `yaml:"proxies"`
	// JoinToken (or JoinTokenFile) is needed only for the first start.
	JoinToken     string `yaml:"join_token"`
	JoinTokenFile string `yaml:"join_token_file"`
	// TunnelStrategy is proxy_peering (default: ConnectionCount tunnels
	// to distinct proxies) or agent_mesh (one tunnel to every proxy).
	TunnelStrategy string `yaml:"tunnel_strategy"`
	// ConnectionCount is the number of tunnels in peering mode (default 1;
	// 2 or more for high availability).
	ConnectionCount int `yaml:"connection_count"`
	// Region (and the proxies' zones) steer which proxies the agent uses:
	// in peering mode, the nearest proxies of its region on distinct zones,
	// else the nearest of other regions until its region answers again.
	Region string `yaml:"region"`
	// ProbeInterval is how often the agent measures its round trip to
	// every known proxy (a TCP connection opened and reset), to home its
	// tunnels to the nearest (default 30s; each probe costs each proxy an
	// accept, so 10,000 agents and 3 proxies make 1,000 a second).
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// CAPin is the SHA256 fingerprint of the cluster host CA; with it the
	// agent checks the proxy on its very first connection.
	CAPin string `yaml:"ca_pin"`
	// HeartbeatInterval: resources are heartbeated this often and at once
	// on change (default 5s).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// HealthInterval: upstreams of tcp resources are checked this often
	// (default 5s).
	HealthInterval time.Duration `yaml:"health_interval"`
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between tunnel attempts (default 200ms and 10s).
	ReconnectMin time.Duration    `yaml:"reconnect_min"`
	ReconnectMax time.Duration    `yaml:"reconnect_max"`
	Resources    []ResourceConfig `yaml:"resources"`
	// Labels describe the agent; dynamic resource selectors match them.
	Labels map[string]string `yaml:"labels"`
	// Watch serves the cluster's dynamic resources whose labels hold all
	// the labels of any watcher.
	Watch []Watcher `yaml:"watch"`
	// Log is the log's format and level (`warren agent` builds Logger from
	// it; its flags win).
	Log conf.Log `yaml:"log"`
	// DebugListen, if set, serves Go's profiles (/debug/pprof/, for `go
	// tool pprof`) and the agent's Prometheus metrics (/metrics) on this
	// address, to requests that carry the token in
	// DebugTokenFile (Authorization: Bearer …), which it requires. Off by
	// default; keep it on loopback or a management network.
	DebugListen    string `yaml:"debug_listen"`
	DebugTokenFile string `yaml:"debug_token_file"`
	// MetricsOpen serves /metrics on debug_listen without the token, for
	// a Prometheus that cannot send one (the profiles still need it).
	MetricsOpen bool `yaml:"metrics_open"`
	// Recording is where and how PTY sessions' recordings are kept until
	// the proxies have them (see recording.go).
	Recording RecordingConfig `yaml:"recording"`

	// SFTPCommand serves the sftp subsystem as the login user (see
	// nodessh.Config); empty serves it in-process.
	SFTPCommand []string         `yaml:"-"`
	Logger      *slog.Logger     `yaml:"-"`
	Clock       func() time.Time `yaml:"-"`
	// ActorSystem, if set, hosts the agent's actors, and Close leaves it
	// running: a process that runs many agents (the scale benchmark's
	// fleets) shares one, as each system costs about 2.5 MiB. Nil: the
	// agent makes its own and shuts it down on Close.
	ActorSystem *actor.ActorSystem `yaml:"-"`
}

// Watcher selects dynamic resources by their labels.
type Watcher struct {
	Labels map[string]string `yaml:"labels"`
}

// ResourceConfig is one static resource.
type ResourceConfig struct {
	Name string `yaml:"name"`
	// Kind is "ssh" (the agent's embedded SSH server for this host) or
	// "tcp" (forward to Addr).
	Kind   string            `yaml:"kind"`
	Addr   string            `yaml:"addr"`
	Labels map[string]string `yaml:"labels"`
}

// LoadConfig reads an agent config file.
func LoadConfig(path string) (Config, error) {
	var c Config
	if err := conf.Load(path, &c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// CheckAndSetDefaults reports every problem at once and returns the config
// with defaults filled in; c itself is not changed.
func (c Config) CheckAndSetDefaults() (Config, error) {
	var errs conf.Errors
	if c.DataDir == "" {
		errs.Addf("data_dir", "required: a directory for the agent's identity")
	}
	if len(c.Proxies) == 0 {
		errs.Addf("proxies", "required: at least one proxy tunnel address, like proxy.example.com:3024")
	}
	for i, p := range c.Proxies {
		if _, _, err := net.SplitHostPort(p); err != nil {
			errs.Addf("proxies["+strconv.Itoa(i)+"]", "%q is not host:port", p)
		}
	}
	if c.DebugListen != "" {
		if _, _, err := net.SplitHostPort(c.DebugListen); err != nil {
			errs.Addf("debug_listen", "%q is not host:port, like 127.0.0.1:3081", c.DebugListen)
		}
		if c.DebugTokenFile == "" {
			errs.Addf("debug_token_file", "required with debug_listen: a file (mode 600) holding the bearer token the profiles require")
		}
	} else if c.DebugTokenFile != "" {
		errs.Addf("debug_token_file", "set without debug_listen, which it is for")
	} else if c.MetricsOpen {
		errs.Addf("metrics_open", "set without debug_listen, where the metrics are served: set debug_listen (and debug_token_file) too")
	}
	c.Log.Check("log", &errs)
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		errs.Addf("join_token_file", "set join_token or join_token_file, not both")
	}
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	c.Recording.checkAndSetDefaults(c.DataDir, &errs)
	switch c.TunnelStrategy {
	case "":
		c.TunnelStrategy = StrategyPeering
	case StrategyPeering, StrategyMesh:
	default:
		errs.Addf("tunnel_strategy", "unknown strategy %q: use %s or %s", c.TunnelStrategy, StrategyPeering, StrategyMesh)
	}
	switch {
	case c.ConnectionCount < 0 || c.ConnectionCount > 16:
		errs.Addf("connection_count", "%d is outside 1 to 16", c.ConnectionCount)
	case c.ConnectionCount == 0:
		c.ConnectionCount = 1
	case c.TunnelStrategy == StrategyMesh && c.ConnectionCount > 1:
		errs.Addf("connection_count", "applies to %s only; %s keeps one tunnel per proxy", StrategyPeering, StrategyMesh)
	}
	if c.Region != "" && !model.ValidName(c.Region) {
		errs.Addf("region", "%v", model.CheckName("region", c.Region))
	}
	if len(c.Resources) == 0 && len(c.Watch) == 0 {
		errs.Addf("resources", "required: at least one resource to serve, or a watch for dynamic ones")
	}
	for i, w := range c.Watch {
		if len(w.Labels) == 0 {
			errs.Addf("watch["+strconv.Itoa(i)+"].labels", "required: the labels a dynamic resource must have")
		}
	}
	seen := map[string]bool{}
	c.Resources = append([]ResourceConfig(nil), c.Resources...)
	for i, r := range c.Resources {
		field := "resources[" + strconv.Itoa(i) + "]"
		switch {
		case r.Name == "":
			errs.Addf(field+".name", "required")
		case !model.ValidName(r.Name):
			errs.Addf(field+".name", "%v", model.CheckName("resource name", r.Name))
		case seen[r.Name]:
			errs.Addf(field+".name", "%q is listed twice", r.Name)
		}
		seen[r.Name] = true
		switch r.Kind {
		case model.KindSSH:
			if r.Addr != "" {
				errs.Addf(field+".addr", "not used by kind ssh (the agent serves SSH itself); use kind tcp to forward to an sshd")
			}
		case model.KindTCP:
			if _, _, err := net.SplitHostPort(r.Addr); err != nil {
				errs.Addf(field+".addr", "kind tcp needs host:port, got %q", r.Addr)
			}
		case "":
			errs.Addf(field+".kind", "required: ssh or tcp")
		default:
			errs.Addf(field+".kind", "unknown kind %q: use ssh or tcp", r.Kind)
		}
		if err := model.CheckLabels(r.Labels); err != nil {
			errs.Addf(field+".labels", "%v", err)
		}
	}
	if len(c.Resources) > revtunnel.MaxResources {
		errs.Addf("resources", "%d resources; an agent may serve at most %d", len(c.Resources), revtunnel.MaxResources)
	}
	durations := []struct {
		field         string
		v             *time.Duration
		def, min, max time.Duration
	}{
		{"heartbeat_interval", &c.HeartbeatInterval, 5 * time.Second, 100 * time.Millisecond, 5 * time.Minute},
		{"health_interval", &c.HealthInterval, 5 * time.Second, 100 * time.Millisecond, 10 * time.Minute},
		{"reconnect_min", &c.ReconnectMin, 200 * time.Millisecond, 10 * time.Millisecond, time.Minute},
		{"reconnect_max", &c.ReconnectMax, 10 * time.Second, 100 * time.Millisecond, time.Hour},
		{"probe_interval", &c.ProbeInterval, 30 * time.Second, 100 * time.Millisecond, 10 * time.Minute},
	}
	for _, d := range durations {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < d.min || *d.v > d.max:
			errs.Addf(d.field, "%s is outside %s to %s", *d.v, d.min, d.max)
		}
	}
	if c.ReconnectMin > c.ReconnectMax {
		errs.Addf("reconnect_min", "%s is longer than reconnect_max (%s)", c.ReconnectMin, c.ReconnectMax)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c, errs.Err()
}
