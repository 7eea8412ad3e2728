package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/sshconfig"
	"github.com/warren-proxy/warren/storage/identity"
	"github.com/warren-proxy/warren/transport/pki"
)

// runDev starts a whole local cluster in this process: a proxy, an agent
// serving this host over its embedded SSH server (node1), an agent
// forwarding to a small echo server (echo), and a user with a certificate
// and an ssh_config that stock OpenSSH uses as it is.
func runDev(ctx context.Context, args []string) error {
	fs := newFlags("dev", "[--dir DIR] [--proxies N] [--regions us,eu,ap [--wan]] [--host IP] [--user-port N] [--tunnel-port N] [--http-port N] [--debug] [--log-format text|json]")
	dir := fs.String("dir", "warren-dev", "directory for the dev cluster's state")
	host := fs.String("host", "127.0.0.1", "address the proxy listens on")
	userPort := fs.Int("user-port", 3023, "proxy user SSH port (0 picks a free one)")
	tunnelPort := fs.Int("tunnel-port", 3024, "proxy tunnel port (0 picks a free one)")
	httpPort := fs.Int("http-port", 3080, "proxy HTTP port (0 picks a free one)")
	proxies := fs.Int("proxies", 1, "number of proxies (on 127.0.0.1, 127.0.0.2, …), in one gossip cluster; with --regions, per region")
	regionList := fs.String("regions", "", "comma-separated `REGIONS` (like us,eu,ap): --proxies proxies per region, each zone of its own, an agent per region serving node-REGION, and an ssh_config entry warren-REGION per region")
	emulated := fs.Bool("wan", false, "with --regions: run the cluster in the emulated WAN, every proxy, agent and user on a host of its own with a realistic latency matrix between regions (network namespaces: root, iproute2)")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	regions, err := parseRegions(*regionList)
	if err != nil {
		return err
	}
	if *emulated {
		if len(regions) == 0 {
			return usageError{"--wan runs a multi-region cluster: add --regions, like --regions us,eu,ap"}
		}
		return runDevWAN(ctx, *dir, regions, *proxies, log)
	}
	d, err := startDev(ctx, devConfig{
		Dir: *dir, Host: *host, UserPort: *userPort, TunnelPort: *tunnelPort, HTTPPort: *httpPort, Proxies: *proxies,
		Regions: regions, Logger: log,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	self := selfCommand()
	if len(regions) > 0 {
		d.printRegions(self)
		<-ctx.Done()
		log.Info("shutting down")
		return nil
	}
	fmt.Printf(`Warren dev cluster is up (state in %[1]s).

  ssh -F %[2]s node1            # a shell on this host through the proxy
  ssh -F %[2]s node1 'echo hi'
  ssh -F %[2]s proxy-1 ls       # list resources (also: status, whoami, audit --since 1h)
  echo hi | ssh -F %[2]s -W echo:7 proxy-1            # the tcp resource "echo" on stdin/stdout
  ssh -F %[2]s -N -L 17007:echo:7 proxy-1             # or as a local port: nc 127.0.0.1 17007
  export WARREN_PROXY=%[3]s WARREN_IDENTITY=%[4]s
  %[5]s ls; %[5]s ssh node1; %[5]s audit --since 1h
  curl http://%[6]s/healthz      # HTTP; /api/v1/ needs the bearer token in %[7]s
  http://%[6]s/status            # the status page in a browser: sign in with that token

Press Ctrl-C to stop.
`, d.dir, d.sshConfig, d.proxy.UserAddr(), d.identity, self, d.proxy.HTTPAddr(), filepath.Join(d.dir, "auth", "api_token"))
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

type devConfig struct {
	Dir                            string
	Host                           string
	UserPort, TunnelPort, HTTPPort int
	Proxies                        int // per region with Regions
	// Regions, when set, make a multi-region cluster; else every proxy is
	// in region "local".
	Regions []string
	Logger  *slog.Logger
}

type devCluster struct {
	dir, sshConfig, identity, user string
	regions                        []string
	nodes                          []string     // the ssh resources, node-REGION with regions
	proxy                          *proxy.Proxy // the first
	proxies                        []devProxy
	h                              *harness.Cluster
	agents                         []*agent.Agent
	echo                           net.Listener
	wg                             sync.WaitGroup
}

func startDev(ctx context.Context, c devConfig) (_ *devCluster, err error) {
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	d := &devCluster{dir: dir, regions: c.Regions}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	authDir := filepath.Join(dir, "auth")
	auth, err := pki.Init(authDir, pki.InitOptions{ClusterName: "dev"})
	if errors.Is(err, pki.ErrIdentityExists) {
		auth, err = pki.Load(authDir)
		if errors.Is(err, pki.ErrNeedsUpgrade) {
			// A dev directory from an older Warren: upgrade it in place.
			if _, err = pki.Upgrade(authDir); err == nil {
				auth, err = pki.Load(authDir)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	// The dev cluster runs in this process from config files like any
	// other (internal/harness writes them), so an operator can read them
	// and run the same with `warren proxy --config` and `warren agent`.
	h, err := harness.OpenWith(dir, auth)
	if err != nil {
		return nil, err
	}
	d.h = h
	total := c.Proxies
	if len(c.Regions) > 0 {
		total *= len(c.Regions)
	}
	hosts, err := devHosts(c.Host, total)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for i, host := range hosts {
		region, zone := "local", fmt.Sprintf("zone-%d", i+1)
		if len(c.Regions) > 0 {
			region = c.Regions[i/c.Proxies]
			zone = fmt.Sprintf("%s-%c", region, 'a'+i%c.Proxies)
		}
		hp := h.NewProxy(i+1, host, region, zone)
		hp.User = net.JoinHostPort(host, fmt.Sprint(c.UserPort))
		hp.Tunnel = net.JoinHostPort(host, fmt.Sprint(c.TunnelPort))
		hp.HTTP = net.JoinHostPort(host, fmt.Sprint(c.HTTPPort))
		if i > 0 {
			// The others run as processes of this binary: protoactor's
			// remote.Start sets gRPC's global logger, which the gRPC
			// connections of a proxy already running here read.
			hp.Seeds = []string{d.proxies[0].GossipAddr()}
			hp.FixedPorts = c.UserPort != 0 && c.TunnelPort != 0 && c.HTTPPort != 0
			err := h.StartProxy(ctx, hp, func(config string) harness.Command {
				return harness.Command{Bin: exe, Args: []string{"proxy", "--config", config}}
			})
			if hp.Proc != nil {
				d.proxies = append(d.proxies, devProxy{h: hp})
			}
			if err != nil {
				return nil, fmt.Errorf("start %s (its log: %s): %w", hp.ID, hp.Logs, err)
			}
			continue
		}
		if err := h.WriteConfig(hp); err != nil {
			return nil, err
		}
		pc, err := proxy.LoadConfig(hp.Config)
		if err != nil {
			return nil, err
		}
		pc.Logger = c.Logger // the proxy adds proxy=ID to its records
		p, err := proxy.New(pc)
		if err != nil {
			return nil, err
		}
		if err := p.Start(ctx); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%w; another warren dev may be running: stop it, or pass --user-port 0 --tunnel-port 0 --http-port 0 for free ports, or another --host such as 127.0.0.2", err)
			}
			return nil, err
		}
		d.proxies = append(d.proxies, devProxy{in: p, h: hp})
		d.proxy = p
	}
	for _, p := range d.proxies[1:] {
		if err := h.WaitReady(ctx, p.h); err != nil {
			return nil, err
		}
	}

	// The echo server behind the "echo" tcp resource.
	if d.echo, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		serveEcho(d.echo)
	}()

	toks, err := auth.JoinTokens()
	if err != nil || len(toks) == 0 {
		return nil, fmt.Errorf("dev cluster needs a join token in %s: %v", authDir, err)
	}
	type agentSpec struct {
		name, resources string
		seeds           []string
	}
	echoYAML := fmt.Sprintf("resources:\n  - {name: echo, kind: tcp, addr: %q, labels: {env: dev}}\n", d.echo.Addr())
	var agents []agentSpec
	if len(c.Regions) == 0 {
		d.nodes = []string{"node1"}
		// Peering mode: each agent keeps one tunnel; spread them.
		agents = []agentSpec{
			{"agent-1", "resources:\n  - {name: node1, kind: ssh, labels: {env: dev}}\n", []string{d.proxies[0].TunnelAddr()}},
			{"agent-2", echoYAML, []string{d.proxies[1%len(d.proxies)].TunnelAddr()}},
		}
	} else {
		// An agent per region, homing to its region's proxies (two
		// tunnels on distinct zones when the region has two proxies).
		for ri, r := range c.Regions {
			var seeds []string
			for _, p := range d.proxies[ri*c.Proxies : (ri+1)*c.Proxies] {
				seeds = append(seeds, p.TunnelAddr())
			}
			node := "node-" + r
			d.nodes = append(d.nodes, node)
			agents = append(agents, agentSpec{"agent-" + r, fmt.Sprintf("region: %q\nconnection_count: %d\nresources:\n  - {name: %q, kind: ssh, labels: {env: dev, region: %q}}\n",
				r, min(2, c.Proxies), node, r), seeds})
		}
		// agent-2, as without regions: its identity, kept in the same
		// directory, holds the name echo (a dev token grants no names, so
		// only the agent that claimed one may serve it).
		agents = append(agents, agentSpec{"agent-2", fmt.Sprintf("region: %q\n", c.Regions[0]) + echoYAML, []string{d.proxies[0].TunnelAddr()}})
	}
	for _, spec := range agents {
		ha := &harness.Agent{Name: spec.name, Proxies: spec.seeds, Token: toks[0], Extra: spec.resources}
		if err := h.WriteAgentConfig(ha); err != nil {
			return nil, err
		}
		if err := forgetStaleIdentity(ha.DataDir, auth); err != nil {
			return nil, err
		}
		ac, err := agent.LoadConfig(ha.Config)
		if err != nil {
			return nil, err
		}
		ac.SFTPCommand = sftpCommand()
		ac.Logger = c.Logger.With("component", ac.Name)
		a, err := agent.New(ac)
		if err != nil {
			return nil, err
		}
		if err := a.Start(ctx); err != nil {
			return nil, err
		}
		d.agents = append(d.agents, a)
	}

	// A user for the person at the keyboard: their own login and root.
	d.user = "dev"
	logins := []string{"root"}
	if u, err := user.Current(); err == nil && u.Username != "root" {
		logins = append([]string{u.Username}, logins...)
	}
	paths, err := issueUser(auth, d.user, logins, []string{"admin"}, 24*time.Hour, dir, pki.KeyEd25519)
	if err != nil {
		return nil, err
	}
	d.identity = paths.key
	d.sshConfig = filepath.Join(dir, "ssh_config")
	f, err := os.OpenFile(d.sshConfig, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	var entries []sshconfig.Proxy
	for _, p := range d.proxies {
		entries = append(entries, sshconfig.Proxy{Name: p.ID(), Addr: p.UserAddr()})
	}
	jump := ""
	for ri, r := range c.Regions {
		// An entry per region: its first proxy.
		entries = append(entries, sshconfig.Proxy{Name: "warren-" + r, Addr: d.proxies[ri*c.Proxies].UserAddr()})
		if ri == 0 {
			jump = "warren-" + r
		}
	}
	werr := sshconfig.Write(f, sshconfig.Config{
		Proxies:            entries,
		User:               d.user,
		Login:              logins[0],
		Identity:           paths.key,
		KnownHosts:         paths.knownHosts,
		ResourceKnownHosts: paths.resourceKnownHosts,
		Hosts:              d.nodes,
		Jump:               jump,
		TCP:                []sshconfig.TCP{{Name: "echo"}},
	})
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, fmt.Errorf("write ssh_config: %w", err)
	}
	if err := d.waitRoutes(ctx, append(slices.Clone(d.nodes), "echo")...); err != nil {
		return nil, err
	}
	return d, nil
}

// parseRegions checks a --regions list.
func parseRegions(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	regions := strings.Split(list, ",")
	for i, r := range regions {
		if err := model.CheckName("region", r); err != nil {
			return nil, usageError{fmt.Sprintf("--regions: %v", err)}
		}
		if slices.Index(regions, r) != i {
			return nil, usageError{fmt.Sprintf("--regions: %s is listed twice", r)}
		}
	}
	if len(regions) > 9 {
		return nil, usageError{fmt.Sprintf("--regions: %d regions; at most 9", len(regions))}
	}
	return regions, nil
}

// printRegions prints how to reach the nodes of a multi-region dev
// cluster.
func (d *devCluster) printRegions(self string) {
	first, last := d.regions[0], d.regions[len(d.regions)-1]
	fmt.Printf(`Warren dev cluster is up: regions %[1]s, on loopback (state in %[2]s).

  ssh -F %[3]s -J warren-%[4]s node-%[5]s 'echo hi'   # enter in %[4]s, reach %[5]s's node through the proxy holding its tunnel
  ssh -F %[3]s -J warren-%[5]s node-%[4]s 'echo hi'   # and the other way
  ssh -F %[3]s warren-%[4]s status                  # members, regions, agents, routes, peer links
  export WARREN_PROXY=%[7]s WARREN_IDENTITY=%[8]s; %[6]s ls

Every region has an entry host (warren-REGION) and its own agent (node-REGION),
homed to its region's proxies. Loopback has no distance between regions:
%[6]s dev --regions %[1]s --wan (as root) runs the same in the emulated WAN.

Press Ctrl-C to stop.
`, strings.Join(d.regions, ","), d.dir, d.sshConfig, first, last, self, d.proxy.UserAddr(), d.identity)
}

// selfCommand is how the person at the keyboard runs this binary again:
// "warren" when that is this binary on PATH, "go run ./cmd/warren" under
// `go run` (whose binary is deleted when it exits), else its path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "warren"
	}
	if p, err := exec.LookPath("warren"); err == nil {
		a, aerr := os.Stat(p)
		b, berr := os.Stat(exe)
		if aerr == nil && berr == nil && os.SameFile(a, b) {
			return "warren"
		}
	}
	if strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return "go run ./cmd/warren"
	}
	return exe
}

// forgetStaleIdentity removes a dev agent's identity whose certificate no
// longer comes from the cluster's agent CA (a directory made by an older
// Warren), so that the agent joins again instead of being refused.
func forgetStaleIdentity(dataDir string, auth *pki.Authority) error {
	path := filepath.Join(dataDir, "identity.db")
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	store, err := identity.Open(path)
	if err != nil {
		return err
	}
	id, ok, err := store.Load()
	store.Close()
	if err != nil || !ok {
		return err
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(id.HostCert); err == nil {
		if _, err := pki.CheckAgentCert(auth.AgentCA.PublicKey(), pub, id.AgentID, time.Now()); err == nil {
			return nil
		}
	}
	return os.Remove(path)
}

// devHosts places n proxies: on loopback each gets its own address
// (127.0.0.1, 127.0.0.2, …), so all of them keep the default ports.
func devHosts(host string, n int) ([]string, error) {
	if n < 1 {
		return nil, usageError{"--proxies must be at least 1"}
	}
	if n == 1 {
		return []string{host}, nil
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || ip[0] != 127 || int(ip[3])+n-1 > 254 {
		return nil, usageError{"--proxies above 1 needs a 127.x.y.z --host: each proxy takes the next loopback address"}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
	}
	return out, nil
}

// devProxy is one proxy of the dev cluster: the first runs in this
// process (in), the others as processes (h.Proc).
type devProxy struct {
	in *proxy.Proxy
	h  *harness.Proxy
}

func (p devProxy) ID() string { return p.h.ID }

func (p devProxy) addr(configured string, bound func(*proxy.Proxy) string) string {
	if p.in != nil {
		return bound(p.in)
	}
	return configured
}

func (p devProxy) UserAddr() string   { return p.addr(p.h.User, (*proxy.Proxy).UserAddr) }
func (p devProxy) TunnelAddr() string { return p.addr(p.h.Tunnel, (*proxy.Proxy).TunnelAddr) }
func (p devProxy) GossipAddr() string { return p.addr(p.h.Gossip, (*proxy.Proxy).GossipAddr) }

// routes reports whether p has a usable route to name.
func (p devProxy) routes(h *harness.Cluster, name string) bool {
	if p.in == nil {
		return h.Healthy(p.h, name) > 0
	}
	for _, e := range p.in.Table().Snapshot().Lookup(name) {
		if e.Usable() {
			return true
		}
	}
	return false
}

// waitRoutes waits until every proxy routes every name.
func (d *devCluster) waitRoutes(ctx context.Context, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var missing []string
		for _, n := range names {
			for _, p := range d.proxies {
				if !p.routes(d.h, n) {
					missing = append(missing, n)
					break
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dev cluster: %s not routed in time (the agents' log lines above say why)", strings.Join(missing, ", "))
		case <-t.C:
		}
	}
}

func (d *devCluster) Close() {
	for _, a := range d.agents {
		a.Close()
	}
	for i := len(d.proxies) - 1; i >= 0; i-- {
		if p := d.proxies[i]; p.in != nil {
			p.in.Close()
		} else {
			p.h.Proc.Stop()
		}
	}
	if d.echo != nil {
		d.echo.Close()
	}
	d.wg.Wait()
}

// serveEcho echoes every byte back until the listener closes, then closes
// the connections still open.
func serveEcho(ln net.Listener) { echo.Serve(ln, nil) }
