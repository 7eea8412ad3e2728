// Package harness writes a Warren cluster's files and runs its proxies as
// processes: the one harness of the end-to-end tests (actors/clustertest,
// cmd/warren), `warren dev` and the benchmarks (bench).
//
// A Cluster is a directory, laid out as an operator would lay it out:
//
//	auth/             the cluster identity (`warren init`)
//	proxy-1.yaml      one config per proxy (WriteConfig)
//	proxy-1/          its data directory
//	agent-1.yaml      one config per agent (WriteAgentConfig)
//	alice, alice-cert.pub, known_hosts, …  users (IssueUser)
//
// Two runners read the same files. In process, a caller loads a config with
// proxy.LoadConfig and starts it (clustertest for one proxy and for
// benchmarks that reach into a proxy; `warren dev`). As processes,
// StartProxy runs a command on the config: the warren binary (bench,
// cmd/warren), or a test binary that runs itself as a proxy
// (clustertest), so that tests with several proxies run under -race:
// protoactor's remote.Start writes gRPC's global logger, which the gRPC
// connections of the other proxies in one process read.
//
// Regions and zones are each proxy's own (NewProxy), so a test can lay out
// a cluster over regions. A proxy may run alone in a network namespace of
// its own, as on its own machine (internal/regions): it then keeps fixed
// ports (DefaultPorts), and the harness reaches its HTTP API through
// Cluster.Dial.
package harness

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
)

// Cluster is one cluster's directory and the proxies written into it.
type Cluster struct {
	Dir      string
	AuthDir  string
	Auth     *pki.Authority
	Pin      string // the host CA's pin, that agents join with
	APIToken string // bearer token of every proxy's HTTP API
	// Gossip is every proxy's memberlist profile; local (fast failure
	// detection on one machine) unless set.
	Gossip string
	// ProxyExtra is YAML appended to every proxy's config.
	ProxyExtra string
	// ShutdownGrace is every proxy's shutdown.grace: how long a stopping
	// proxy lets the sessions that entered through it run (5s unless set;
	// a cluster on one machine has no users to wait for).
	ShutdownGrace time.Duration
	// Dial, if set, opens the connections to the proxies' HTTP APIs (for
	// proxies in network namespaces the caller's has no route to);
	// otherwise they are dialed from here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	http *http.Client
}

// New makes the cluster identity in dir/auth, as `warren init` does.
func New(dir, name string) (*Cluster, error) {
	auth, err := pki.Init(filepath.Join(dir, "auth"), pki.InitOptions{ClusterName: name})
	if err != nil {
		return nil, err
	}
	return OpenWith(dir, auth)
}

// Open is a cluster whose identity is already in dir/auth (made by
// `warren init`, say).
func Open(dir string) (*Cluster, error) {
	auth, err := pki.Load(filepath.Join(dir, "auth"))
	if err != nil {
		return nil, err
	}
	return OpenWith(dir, auth)
}

// OpenWith is a cluster in dir whose identity, auth, the caller already
// loaded from dir/auth.
func OpenWith(dir string, auth *pki.Authority) (*Cluster, error) {
	c := &Cluster{Dir: dir, AuthDir: filepath.Join(dir, "auth"), Auth: auth, Gossip: model.ProfileLocal,
		Pin: pki.Fingerprint(auth.HostCA.PublicKey())}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if c.Dial != nil {
			return c.Dial(ctx, network, addr)
		}
		return d.DialContext(ctx, network, addr)
	}
	c.http = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	var err error
	if c.APIToken, err = auth.APIToken(); err != nil {
		return nil, err
	}
	return c, nil
}

// Proxy is one proxy of a cluster: where it runs, what it listens on and
// its config file.
type Proxy struct {
	ID, Region, Zone string
	IP               string // the address it alone listens on: on loopback, or its own host's
	// Listen addresses. Port 0 lets the proxy pick (in process); StartProxy
	// picks free ports first, since a process cannot report them, unless
	// FixedPorts.
	User, Tunnel, HTTP, Gossip, Peer string
	Far                              string   // peer.far_listen
	Seeds                            []string // gossip addresses it joins through
	GossipKey                        string   // gossip.secret_key, if not the auth directory's
	DataDir                          string
	Config                           string // its YAML file
	Extra                            string // YAML appended after the cluster's ProxyExtra
	// FixedPorts: StartProxy keeps the listen addresses as they are (see
	// DefaultPorts).
	FixedPorts bool
	// Proc is the process, once StartProxy ran it; Logs are the log files
	// of every start, the latest last.
	Proc *Proc
	Logs []string
}

// NewProxy places proxy number i (1-based), "proxy-i", on ip, in region
// and zone.
func (c *Cluster) NewProxy(i int, ip, region, zone string) *Proxy {
	return c.NewProxyID(fmt.Sprintf("proxy-%d", i), ip, region, zone)
}

// NewProxyID is NewProxy for a proxy named id.
func (c *Cluster) NewProxyID(id, ip, region, zone string) *Proxy {
	p := &Proxy{ID: id, Region: region, Zone: zone, IP: ip,
		DataDir: filepath.Join(c.Dir, id), Config: filepath.Join(c.Dir, id+".yaml")}
	p.User, p.Tunnel, p.HTTP, p.Gossip, p.Peer, p.Far = ip+":0", ip+":0", ip+":0", ip+":0", ip+":0", ip+":0"
	return p
}

// DefaultPorts puts p's listen addresses on the proxy's default ports
// (model.PortUser, …) and keeps them there (FixedPorts): for a proxy alone
// in a network namespace of its own, as on its own machine. FreePort could
// not probe them anyway: it probes the caller's namespace.
func (p *Proxy) DefaultPorts() {
	at := func(port string) string { return net.JoinHostPort(p.IP, port) }
	p.User, p.Tunnel, p.HTTP = at(model.PortUser), at(model.PortTunnel), at(model.PortHTTP)
	p.Gossip, p.Peer, p.Far = at(model.PortGossip), at(model.PortPeer), at(model.PortPeerFar)
	p.FixedPorts = true
}

// WriteConfig writes p's config file.
func (c *Cluster) WriteConfig(p *Proxy) error {
	gossip := "seeds: " + quoteList(p.Seeds)
	mode := os.FileMode(0o644)
	if p.GossipKey != "" {
		gossip += ", secret_key: " + strconv.Quote(p.GossipKey)
		mode = 0o600 // a secret
	}
	text := fmt.Sprintf(`id: %q
region: %q
zone: %q
data_dir: %q
auth_dir: %q
listen: {user: %q, tunnel: %q, http: %q}
gossip: {listen: %q, %s, profile: %q}
peer: {listen: %q, far_listen: %q}
shutdown: {grace: %s}
%s
%s
`, p.ID, p.Region, p.Zone, p.DataDir, c.AuthDir, p.User, p.Tunnel, p.HTTP, p.Gossip, gossip, c.Gossip, p.Peer, p.Far, cmp.Or(c.ShutdownGrace, 5*time.Second), c.ProxyExtra, p.Extra)
	return writeFile(p.Config, text, mode)
}

// quoteList is a YAML flow sequence of quoted strings (Go's quoting is
// YAML's double-quoted style for what a path or an address holds).
func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// Agent is one agent's config.
type Agent struct {
	Name    string
	Proxies []string // tunnel addresses it joins through
	Token   string   // join token
	// Extra is YAML appended to the config (resources, labels, strategy).
	Extra   string
	DataDir string
	Config  string
}

// WriteAgentConfig writes a's config file (dir/NAME.yaml, data in
// dir/NAME unless set), with the short intervals of a cluster on one
// machine.
func (c *Cluster) WriteAgentConfig(a *Agent) error {
	if a.DataDir == "" {
		a.DataDir = filepath.Join(c.Dir, a.Name)
	}
	if a.Config == "" {
		a.Config = filepath.Join(c.Dir, a.Name+".yaml")
	}
	text := fmt.Sprintf(`name: %q
data_dir: %q
proxies: %s
join_token: %q
ca_pin: %q
heartbeat_interval: 1s
health_interval: 1s
reconnect_min: 50ms
reconnect_max: 1s
%s
`, a.Name, a.DataDir, quoteList(a.Proxies), a.Token, c.Pin, a.Extra)
	// The join token is a secret.
	return writeFile(a.Config, text, 0o600)
}

// User is a user's files: key, certificate and known_hosts for the
// proxies and for resources.
type User struct {
	Name, Key, Cert                string
	KnownHosts, ResourceKnownHosts string
	Certificate                    *ssh.Certificate
	Signer                         ssh.Signer
}

// IssueUser writes a key for name into dir, with a certificate for logins
// and roles valid for ttl, and known_hosts files that trust the cluster's
// proxy and agent host CAs.
func (c *Cluster) IssueUser(name string, logins, roles []string, ttl time.Duration, dir string) (*User, error) {
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	cert, err := c.Auth.IssueUserCert(signer.PublicKey(), pki.UserCertRequest{
		User: name, Logins: logins, Roles: roles, TTL: ttl, Now: time.Now(),
	})
	if err != nil {
		return nil, err
	}
	u := &User{Name: name, Certificate: cert}
	if u.Signer, err = ssh.NewCertSigner(cert, signer); err != nil {
		return nil, err
	}
	if u.Key, err = pki.WriteUserFiles(dir, name, keyPEM, cert); err != nil {
		return nil, err
	}
	u.Cert = u.Key + "-cert.pub"
	if u.KnownHosts, u.ResourceKnownHosts, err = pki.WriteKnownHosts(dir, c.Auth.HostCA.PublicKey(), c.Auth.AgentCA.PublicKey()); err != nil {
		return nil, err
	}
	return u, nil
}

// StartProxy runs p as a process: command turns its config file into the
// command line. Ports are picked free just before it starts, so another
// process may take one in between: a proxy that exits at once is started
// again on new ports (unless FixedPorts: then its addresses are kept, and
// an early exit is an error at once). It returns once p is up, every port
// bound (it answers /healthz); WaitReady waits until it has joined.
func (c *Cluster) StartProxy(ctx context.Context, p *Proxy, command func(config string) Command) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = c.startProxy(ctx, p, command); err == nil || p.Proc == nil || !p.Proc.Exited() || p.FixedPorts {
			return err
		}
	}
	return err
}

func (c *Cluster) startProxy(ctx context.Context, p *Proxy, command func(string) Command) error {
	p.Proc = nil
	if !p.FixedPorts {
		for _, a := range []*string{&p.User, &p.Tunnel, &p.HTTP, &p.Gossip, &p.Peer, &p.Far} {
			var err error
			if *a, err = FreePort(p.IP); err != nil {
				return err
			}
		}
	}
	if err := c.WriteConfig(p); err != nil {
		return err
	}
	cmd := command(p.Config)
	cmd.Name = p.ID
	cmd.Log = filepath.Join(c.Dir, fmt.Sprintf("%s.%d.log", p.ID, len(p.Logs)+1))
	proc, err := Start(cmd)
	if err != nil {
		return err
	}
	p.Proc = proc
	p.Logs = append(p.Logs, cmd.Log)
	// The proxy serves HTTP once every other port is bound; a port taken
	// in the meantime ends the process instead.
	return c.wait(ctx, p, "/healthz", "up")
}

// WaitReady waits until p answers /readyz: gossip has joined and the
// peers' routes and configuration are in.
func (c *Cluster) WaitReady(ctx context.Context, p *Proxy) error {
	return c.wait(ctx, p, "/readyz", "ready")
}

func (c *Cluster) wait(ctx context.Context, p *Proxy, path, what string) error {
	return Until(ctx, 30*time.Second, 20*time.Millisecond, p.ID+" "+what, func() (bool, error) {
		if p.Proc != nil && p.Proc.Exited() {
			return false, p.Proc.Failure()
		}
		res, err := c.http.Get("http://" + p.HTTP + path)
		if err != nil {
			return false, nil
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, nil
	})
}

// API GETs a path of p's HTTP API into v.
func (c *Cluster) API(p *Proxy, path string, v any) error {
	req, err := http.NewRequest("GET", "http://"+p.HTTP+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.APIToken)
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", p.ID, path, res.Status, b)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// Status is p's view of the cluster (as `warren status`).
func (c *Cluster) Status(p *Proxy) ([]model.MemberStatus, error) {
	var st []model.MemberStatus
	err := c.API(p, "/api/v1/status", &st)
	return st, err
}

// Resources is p's list of resources (as `warren ls`).
func (c *Cluster) Resources(p *Proxy) ([]model.Summary, error) {
	var out struct {
		Resources []model.Summary `json:"resources"`
	}
	err := c.API(p, "/api/v1/resources", &out)
	return out.Resources, err
}

// Healthy returns how many healthy agents p lists for name (-1 when p
// does not answer).
func (c *Cluster) Healthy(p *Proxy, name string) int {
	rs, err := c.Resources(p)
	if err != nil {
		return -1
	}
	for _, r := range rs {
		if r.Name == name {
			return r.Healthy
		}
	}
	return 0
}

// Until polls cond every interval until it holds, returns an error, ctx
// ends or the timeout passes; what names the condition in the error.
func Until(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// writeFile replaces path in one step: a reader (an ssh client, a
// restarting proxy) never sees half a file.
func writeFile(path, text string, mode os.FileMode) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(text), mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}
