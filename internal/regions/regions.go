// Package regions runs a multi-region Warren cluster in the emulated WAN
// of internal/wan, for tests that need real latency between real
// processes: per region, proxies (one per zone), agents serving ssh
// resources, and a user host; every one a `warren` process on a host of
// its own, started with `ip netns exec`, and users are stock OpenSSH
// `ssh -J` run on a region's user host.
//
// # Layout
//
// For Regions [us eu ap] with two proxies and one agent per region:
//
//	host       address     runs
//	us-p1      10.99.1.1   proxy-us-1 (region us, zone a), gossip seed
//	us-p2      10.99.1.2   proxy-us-2 (zone b)
//	us-a1      10.99.1.3   agent-us-1 serving node-us-1 (kind ssh)
//	us-user    10.99.1.4   ssh clients (Cluster.SSH)
//	eu-p1 …    10.99.2.1   … and so on per region
//
// Each proxy is alone on its host, so it listens on the proxy's default
// ports (3023 user, 3024 tunnel, 3080 HTTP, 3020 gossip, 3021 peer) and
// keeps them across KillRegion and StartRegion. The gossip seeds of
// every proxy are the first proxy of every region. An agent is in its
// region (`region:`), keeps two tunnels (`connection_count: 2`) and lists
// the tunnel addresses of its own region's proxies first, then the
// others'. The test process has no address in the network: it reads the
// proxies' HTTP API (Cluster.H.Status, Resources, …) over connections
// made in each proxy's own namespace (wan.Net.DialContext through
// harness.Cluster.Dial).
//
// The cluster's files are in Spec.Dir, as internal/harness lays them out,
// with ssh_config for the user (alice, role admin, logins Spec.Login):
// Host entries for every proxy by id and `node-*` for the resources.
// Commands a node runs run on its agent's host: `ip netns identify`
// there names the host's namespace, which proves which node answered.
//
// The nodes run commands as `$SHELL -c`, and bash, when it sees SSH_CLIENT
// in a first-level shell, reads ~/.bashrc as for sshd; on a developer's
// machine that may take seconds (pyenv's init took 2 to 3 s here, more
// than any path of the WAN). So the ssh_config sends SHLVL=1 (SetEnv),
// which makes the job's bash a second-level shell that skips it.
//
// Start returns once every proxy sees every other alive and lists every
// resource healthy. Close ends every process and removes the network.
//
// # Measured
//
// TestSSHAcrossRegions (one-way us-eu 40 ms, us-ap 60 ms, eu-ap 90 ms,
// 0.5 ms inside; 2 cores shared with other builds; warren with -race):
// the cluster is up in 13 s (4 to 7 s without -race), and one stock
// `ssh -J` with a command, from start to exit, takes
//
//	path      one-way  ssh wall time (first session of the pair)
//	inside    0.5 ms   0.48 to 0.50 s
//	us-eu     40 ms    1.64 to 1.71 s
//	us-ap     60 ms    2.16 to 2.40 s
//	eu-ap     90 ms    2.83 to 3.16 s
//
// ssh -v shows where it goes, for eu to node-ap-1 (RTT 180 ms): the
// channel to the node through the entry proxy and its peer takes 2 round
// trips, 0.39 to 0.46 s (the dial request and its answer, then the peer
// data stream; the first session after start took 0.96 s), then
// OpenSSH's own key exchange, authentication and exec are 9 round trips
// of 186 to 216 ms each. The peer links' RTTs (`warren status`) were 1
// to 3% above the emulated ones in a settled cluster without -race, and
// up to 20% above with -race just after start.
package regions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/wan"
)

// Spec is the cluster to start.
type Spec struct {
	Bin string // the warren binary
	Dir string // the cluster's files and logs
	// Regions, at most 9, each 1 to 12 of a-z and 0-9.
	Regions []string
	// ProxiesPerRegion (default 2, at most 9) are in zones a, b, c, …;
	// AgentsPerRegion (default 1, at most 9) each serve node-REGION-I.
	ProxiesPerRegion, AgentsPerRegion int
	// Delays are the one-way delays between regions, by pair in either
	// order; a pair not given has none. Inside is the one-way delay
	// between two hosts of one region.
	Delays map[[2]string]time.Duration
	Inside time.Duration
	// Jitter (added to each delay, uniform in [0, Jitter)) and Loss (0 to
	// 1) apply between regions.
	Jitter time.Duration
	Loss   float64
	// Rate caps each direction between two regions, in bytes per second,
	// behind a queue of Queue bytes (wan.Link's; 0: no cap, and the
	// emulator's default queue): for benchmarks that load the ocean.
	Rate  int64
	Queue int
	// Gossip is the proxies' membership profile (default wan, the one for
	// proxies in several regions).
	Gossip string
	// ProxyYAML and AgentYAML are appended to every proxy's and agent's
	// config.
	ProxyYAML, AgentYAML string
	// Login is the login on the nodes (default: this process's user; the
	// agents run as this process's user, so a node accepts only that login
	// unless it is root).
	Login string
	// ExtraHosts names more hosts for every region, for what a test or
	// benchmark runs beside the cluster (a fleet of agents, a stock sshd):
	// host REGION-NAME, after the user host. Each name 1 to 12 of a-z and
	// 0-9.
	ExtraHosts []string
}

// CheckAndSetDefaults reports every problem at once and returns the spec
// with defaults filled in; s itself is not changed.
func (s Spec) CheckAndSetDefaults() (Spec, error) {
	var errs conf.Errors
	if s.Bin == "" {
		errs.Addf("Bin", "required: the warren binary")
	}
	if s.Dir == "" {
		errs.Addf("Dir", "required: a directory for the cluster's files")
	}
	if len(s.Regions) == 0 || len(s.Regions) > 9 {
		errs.Addf("Regions", "%d regions: want 1 to 9", len(s.Regions))
	}
	for i, r := range s.Regions {
		if r == "" || len(r) > 12 || strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			errs.Addf(fmt.Sprintf("Regions[%d]", i), "%q: want 1 to 12 of a-z and 0-9", r)
		}
		if slices.Index(s.Regions, r) != i {
			errs.Addf(fmt.Sprintf("Regions[%d]", i), "%q is listed twice", r)
		}
	}
	s.Regions = slices.Clone(s.Regions)
	for _, n := range []struct {
		field string
		v     *int
		def   int
	}{{"ProxiesPerRegion", &s.ProxiesPerRegion, 2}, {"AgentsPerRegion", &s.AgentsPerRegion, 1}} {
		switch {
		case *n.v == 0:
			*n.v = n.def
		case *n.v < 0 || *n.v > 9:
			errs.Addf(n.field, "%d is outside 1 to 9", *n.v)
		}
	}
	for pair, d := range s.Delays {
		if !slices.Contains(s.Regions, pair[0]) || !slices.Contains(s.Regions, pair[1]) || pair[0] == pair[1] {
			errs.Addf("Delays", "%s-%s is not a pair of two of the regions %v", pair[0], pair[1], s.Regions)
		}
		if d < 0 {
			errs.Addf("Delays", "%s-%s: %s is negative", pair[0], pair[1], d)
		}
	}
	if s.Inside < 0 || s.Jitter < 0 {
		errs.Addf("Inside", "Inside (%s) and Jitter (%s) must not be negative", s.Inside, s.Jitter)
	}
	if s.Loss < 0 || s.Loss > 1 {
		errs.Addf("Loss", "%g is outside 0 to 1", s.Loss)
	}
	if s.Rate < 0 || s.Queue < 0 {
		errs.Addf("Rate", "Rate (%d) and Queue (%d) must not be negative", s.Rate, s.Queue)
	}
	for i, n := range s.ExtraHosts {
		if n == "" || len(n) > 12 || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789") != "" || n == "user" ||
			slices.Index(s.ExtraHosts, n) != i {
			errs.Addf(fmt.Sprintf("ExtraHosts[%d]", i), "%q: want 1 to 12 of a-z and 0-9, not user, each once", n)
		}
	}
	s.ExtraHosts = slices.Clone(s.ExtraHosts)
	if s.Gossip == "" {
		s.Gossip = model.ProfileWAN
	} else if err := model.CheckProfile(s.Gossip); err != nil {
		errs.Addf("Gossip", "%v", err)
	}
	if s.Login == "" {
		u, err := user.Current()
		if err != nil {
			errs.Addf("Login", "not set, and this process's user is unknown: %v", err)
		} else {
			s.Login = u.Username
		}
	}
	return s, errs.Err()
}

// topology is the emulated network: per region its proxies' hosts, its
// agents' and its user host, in that order (so addresses 10.99.R.1 on
// are the proxies').
func (s Spec) topology() wan.Topology {
	t := wan.Topology{Inside: wan.Link{Delay: s.Inside}, Between: map[[2]string]wan.Link{},
		Default: wan.Link{Jitter: s.Jitter, Loss: s.Loss, Rate: s.Rate, Queue: s.Queue}}
	for _, r := range s.Regions {
		for i := 1; i <= s.ProxiesPerRegion; i++ {
			t.Hosts = append(t.Hosts, wan.Host{Name: fmt.Sprintf("%s-p%d", r, i), Region: r})
		}
		for i := 1; i <= s.AgentsPerRegion; i++ {
			t.Hosts = append(t.Hosts, wan.Host{Name: fmt.Sprintf("%s-a%d", r, i), Region: r})
		}
		t.Hosts = append(t.Hosts, wan.Host{Name: UserHost(r), Region: r})
		for _, n := range s.ExtraHosts {
			t.Hosts = append(t.Hosts, wan.Host{Name: ExtraHost(r, n), Region: r})
		}
	}
	for pair, d := range s.Delays {
		t.Between[pair] = wan.Link{Delay: d, Jitter: s.Jitter, Loss: s.Loss, Rate: s.Rate, Queue: s.Queue}
	}
	return t
}

// UserHost is the host of region where Cluster.SSH runs the users' ssh.
func UserHost(region string) string { return region + "-user" }

// ExtraHost is the host of region that Spec.ExtraHosts calls name.
func ExtraHost(region, name string) string { return region + "-" + name }

// Cluster is a running multi-region cluster.
type Cluster struct {
	Spec Spec // with its defaults
	Net  *wan.Net
	// H holds the cluster's files and reads the proxies' HTTP API
	// (H.Status(p), H.Resources(p), H.Healthy(p, name)) in their hosts'
	// namespaces.
	H         *harness.Cluster
	User      *harness.User
	SSHConfig string // the user's ssh_config

	proxies map[string][]*Proxy // by region
	agents  map[string][]*Agent // by region
	byIP    map[string]string   // host address → host name
	once    sync.Once
}

// Proxy is one proxy of a Cluster: harness's view of it and its host.
type Proxy struct {
	*harness.Proxy
	Host string
}

// Agent is one agent process and the resource it serves.
type Agent struct {
	Host, Region, Resource string
	Config                 *harness.Agent
	Proc                   *harness.Proc
}

// Start builds the network, starts every proxy and agent, and returns once
// every proxy sees every other alive and lists every resource healthy, or
// ctx ends. On an error it leaves nothing running.
func Start(ctx context.Context, spec Spec) (_ *Cluster, err error) {
	if spec, err = spec.CheckAndSetDefaults(); err != nil {
		return nil, fmt.Errorf("regions: %w", err)
	}
	c := &Cluster{Spec: spec, proxies: map[string][]*Proxy{}, agents: map[string][]*Agent{}, byIP: map[string]string{}}
	if c.Net, err = wan.New(spec.topology()); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.H, err = harness.New(spec.Dir, "regions"); err != nil {
		return nil, err
	}
	c.H.Gossip = spec.Gossip
	c.H.ProxyExtra = spec.ProxyYAML
	c.H.Dial = c.dial
	if c.User, err = c.H.IssueUser("alice", []string{spec.Login}, []string{"admin"}, 24*time.Hour, spec.Dir); err != nil {
		return nil, err
	}
	var seeds []string
	for _, r := range spec.Regions {
		for i := 1; i <= spec.ProxiesPerRegion; i++ {
			host := fmt.Sprintf("%s-p%d", r, i)
			ip := c.Net.Addr(host).String()
			p := &Proxy{Proxy: c.H.NewProxyID(fmt.Sprintf("proxy-%s-%d", r, i), ip, r, string(rune('a'+i-1))), Host: host}
			p.DefaultPorts()
			c.proxies[r] = append(c.proxies[r], p)
			c.byIP[ip] = host
		}
		seeds = append(seeds, c.proxies[r][0].Gossip)
	}
	for _, p := range c.all() {
		p.Seeds = slices.DeleteFunc(slices.Clone(seeds), func(s string) bool { return s == p.Gossip })
	}
	if err := c.startProxies(ctx, c.all()); err != nil {
		return nil, err
	}
	if err := c.WaitMembers(ctx); err != nil {
		return nil, err
	}
	if err := c.writeSSHConfig(); err != nil {
		return nil, err
	}
	if err := c.startAgents(); err != nil {
		return nil, err
	}
	return c, c.WaitRoutable(ctx)
}

// dial opens a connection to a host's address in that host's namespace.
func (c *Cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ip, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	host, ok := c.byIP[ip]
	if !ok {
		return nil, fmt.Errorf("regions: dial %s: no proxy host has that address", addr)
	}
	return c.Net.DialContext(ctx, host, network, addr)
}

// all is every proxy, region by region.
func (c *Cluster) all() []*Proxy {
	var out []*Proxy
	for _, r := range c.Spec.Regions {
		out = append(out, c.proxies[r]...)
	}
	return out
}

// startProxies starts ps at once (each waits for its own /healthz), then
// waits until each is ready.
func (c *Cluster) startProxies(ctx context.Context, ps []*Proxy) error {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			errs[i] = c.H.StartProxy(ctx, p.Proxy, func(config string) harness.Command {
				return c.command(p.Host, "proxy", "--config", config)
			})
			if errs[i] == nil {
				errs[i] = c.H.WaitReady(ctx, p.Proxy)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// command runs warren with args on host.
func (c *Cluster) command(host string, args ...string) harness.Command {
	return c.Command(host, c.Spec.Bin, args...)
}

// Command is bin with args to run on host (with harness.Start): any host
// of the network, such as REGION-NAME of Spec.ExtraHosts.
func (c *Cluster) Command(host, bin string, args ...string) harness.Command {
	return harness.Command{Bin: "ip", Args: append([]string{"netns", "exec", c.Net.Namespace(host), bin}, args...)}
}

func (c *Cluster) startAgents() error {
	tokens, err := c.H.Auth.JoinTokens()
	if err != nil || len(tokens) == 0 {
		return fmt.Errorf("regions: no static join token in %s: %v", c.H.AuthDir, err)
	}
	for _, r := range c.Spec.Regions {
		// Its own region's proxies first, then the others' in order.
		var tunnels []string
		for _, p := range c.proxies[r] {
			tunnels = append(tunnels, p.Tunnel)
		}
		for _, p := range c.all() {
			if p.Region != r {
				tunnels = append(tunnels, p.Tunnel)
			}
		}
		for i := 1; i <= c.Spec.AgentsPerRegion; i++ {
			a := &Agent{Host: fmt.Sprintf("%s-a%d", r, i), Region: r, Resource: fmt.Sprintf("node-%s-%d", r, i)}
			a.Config = &harness.Agent{Name: fmt.Sprintf("agent-%s-%d", r, i), Proxies: tunnels, Token: tokens[0],
				Extra: fmt.Sprintf("region: %q\nconnection_count: 2\nresources:\n  - {name: %q, kind: ssh}\n%s", r, a.Resource, c.Spec.AgentYAML)}
			if err := c.H.WriteAgentConfig(a.Config); err != nil {
				return err
			}
			cmd := c.command(a.Host, "agent", "--config", a.Config.Config)
			cmd.Name, cmd.Log = a.Config.Name, filepath.Join(c.Spec.Dir, a.Config.Name+".log")
			if a.Proc, err = harness.Start(cmd); err != nil {
				return err
			}
			c.agents[r] = append(c.agents[r], a)
		}
	}
	return nil
}

// writeSSHConfig writes the user's ssh_config: every proxy by id, and
// node-* for the resources (entered with -J).
func (c *Cluster) writeSSHConfig() error {
	var b strings.Builder
	id := func(knownHosts string) {
		fmt.Fprintf(&b, "    IdentityFile %s\n    CertificateFile %s\n    IdentitiesOnly yes\n", c.User.Key, c.User.Cert)
		fmt.Fprintf(&b, "    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n", knownHosts)
	}
	for _, p := range c.all() {
		host, port, _ := net.SplitHostPort(p.User)
		fmt.Fprintf(&b, "Host %s\n    HostName %s\n    Port %s\n    User %s\n", p.ID, host, port, c.User.Name)
		id(c.User.KnownHosts)
	}
	fmt.Fprintf(&b, "Host node-*\n    User %s\n    SetEnv SHLVL=1\n", c.Spec.Login)
	id(c.User.ResourceKnownHosts)
	b.WriteString("Host *\n    BatchMode yes\n    ConnectTimeout 10\n    ControlMaster no\n    LogLevel ERROR\n")
	c.SSHConfig = filepath.Join(c.Spec.Dir, "ssh_config")
	return os.WriteFile(c.SSHConfig, []byte(b.String()), 0o644)
}

// Proxies returns region's proxies, zone a first.
func (c *Cluster) Proxies(region string) []*Proxy { return c.proxies[region] }

// Agents returns region's agents.
func (c *Cluster) Agents(region string) []*Agent { return c.agents[region] }

// Resources returns every resource's name, region by region.
func (c *Cluster) Resources() []string {
	var out []string
	for _, r := range c.Spec.Regions {
		for _, a := range c.agents[r] {
			out = append(out, a.Resource)
		}
	}
	return out
}

// SSH is stock ssh, run on fromRegion's user host with the cluster's
// ssh_config, entering the first running proxy of that region (-J) to
// reach target, a resource, with args as the remote command. ctx ends it.
func (c *Cluster) SSH(ctx context.Context, fromRegion, target string, args ...string) *exec.Cmd {
	ps := c.proxies[fromRegion]
	var via *Proxy
	for _, p := range ps {
		if p.Proc != nil && !p.Proc.Exited() {
			via = p
			break
		}
	}
	if via == nil && len(ps) > 0 {
		via = ps[0] // none runs: ssh fails as a user's would
	}
	return c.SSHVia(ctx, fromRegion, via, target, args...)
}

// SSHVia is SSH entering proxy via (of any region).
func (c *Cluster) SSHVia(ctx context.Context, fromRegion string, via *Proxy, target string, args ...string) *exec.Cmd {
	ssh := []string{"netns", "exec", c.Net.Namespace(UserHost(fromRegion)), "ssh", "-F", c.SSHConfig}
	if via != nil {
		ssh = append(ssh, "-J", via.ID)
	}
	cmd := exec.CommandContext(ctx, "ip", append(append(ssh, target), args...)...)
	// The ProxyJump ssh, a child, may hold the output pipes a moment
	// after its parent is killed.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// KillRegion sends SIGKILL to every proxy of region and waits until they
// have ended.
func (c *Cluster) KillRegion(region string) {
	for _, p := range c.proxies[region] {
		if p.Proc != nil {
			p.Proc.Kill()
		}
	}
}

// StartRegion starts region's proxies again, on the same addresses and
// data directories, and waits until they are ready.
func (c *Cluster) StartRegion(ctx context.Context, region string) error {
	var ps []*Proxy
	for _, p := range c.proxies[region] {
		if p.Proc == nil || p.Proc.Exited() {
			ps = append(ps, p)
		}
	}
	return c.startProxies(ctx, ps)
}

// WaitMembers waits until every running proxy sees every running proxy
// as a member it has a working peer link to.
func (c *Cluster) WaitMembers(ctx context.Context) error {
	var live []*Proxy
	for _, p := range c.all() {
		if p.Proc != nil && !p.Proc.Exited() {
			live = append(live, p)
		}
	}
	return harness.Until(ctx, time.Minute, 100*time.Millisecond, fmt.Sprintf("%d proxies to see each other", len(live)), func() (bool, error) {
		for _, p := range live {
			if p.Proc.Exited() {
				return false, p.Proc.Failure()
			}
			st, err := c.H.Status(p.Proxy)
			if err != nil {
				return false, nil
			}
			linked := 0
			for _, m := range st {
				if m.Link == "ok" || m.Link == "self" {
					linked++
				}
			}
			if linked != len(live) {
				return false, nil
			}
		}
		return true, nil
	})
}

// WaitRoutable waits until every running proxy lists every resource with
// a healthy agent.
func (c *Cluster) WaitRoutable(ctx context.Context) error {
	return harness.Until(ctx, time.Minute, 100*time.Millisecond, "every resource healthy on every proxy", func() (bool, error) {
		for _, a := range c.allAgents() {
			if a.Proc.Exited() {
				return false, a.Proc.Failure()
			}
		}
		for _, p := range c.all() {
			if p.Proc == nil || p.Proc.Exited() {
				continue
			}
			for _, name := range c.Resources() {
				if c.H.Healthy(p.Proxy, name) < 1 {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

func (c *Cluster) allAgents() []*Agent {
	var out []*Agent
	for _, r := range c.Spec.Regions {
		out = append(out, c.agents[r]...)
	}
	return out
}

// Logs returns the last lines of every proxy's and agent's latest log,
// for a failed test to show.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	tail := func(name, path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&b, "=== %s: %v\n", name, err)
			return
		}
		ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "=== %s (%s), last %d of %d lines:\n%s\n", name, path, min(lines, len(ls)), len(ls),
			strings.Join(ls[max(0, len(ls)-lines):], "\n"))
	}
	for _, p := range c.all() {
		if len(p.Logs) > 0 {
			tail(p.ID, p.Logs[len(p.Logs)-1])
		}
	}
	for _, a := range c.allAgents() {
		tail(a.Config.Name, a.Proc.Log)
	}
	return b.String()
}

// Close kills every process and removes the network.
func (c *Cluster) Close() error {
	var err error
	c.once.Do(func() {
		for _, a := range c.allAgents() {
			a.Proc.Kill()
		}
		for _, p := range c.all() {
			if p.Proc != nil {
				p.Proc.Kill()
			}
		}
		if c.Net != nil {
			err = c.Net.Close()
		}
	})
	return err
}
