package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
)

// Cluster is a Warren cluster of separate processes on loopback: proxies
// on 127.0.1.1, 127.0.1.2, … (one address each, as on separate hosts) and
// the agents a scenario starts, plus a user ("bench") with a certificate
// for every login.
type Cluster struct {
	Dir      string
	Auth     string
	Token    string // join token
	Pin      string // host CA pin for agents
	APIToken string
	Login    string // the unix login sessions use on targets
	User     UserFiles
	Proxies  []*ProxyProc

	env     Env
	authz   *pki.Authority
	userCA  string          // authorized_keys line of the user CA, for sshd
	hostCAs []ssh.PublicKey // proxy and agent host CAs
	signer  ssh.Signer
	http    *http.Client
	stop    cleanups
}

// UserFiles are the bench user's key, certificate and known_hosts.
type UserFiles struct {
	Key, Cert, KnownHosts string
}

// ProxyProc is one proxy process and its addresses.
type ProxyProc struct {
	ID, IP                               string
	User, Tunnel, HTTP, Gossip, PeerAddr string
	Config                               string
	Proc                                 *Proc
}

// ClusterConfig shapes a cluster.
type ClusterConfig struct {
	Proxies int
	// Gossip is the memberlist profile: local (fast failure detection on
	// one machine) by default.
	Gossip string
	// Extra is YAML appended to every proxy's config.
	Extra string
}

// StartCluster writes a cluster identity, starts the proxies and waits
// until each sees all the others.
func StartCluster(ctx context.Context, env Env, dir string, cfg ClusterConfig) (_ *Cluster, err error) {
	c := &Cluster{Dir: dir, Auth: filepath.Join(dir, "auth"), env: env, http: &http.Client{Timeout: 10 * time.Second}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.authz, err = pki.Init(c.Auth, pki.InitOptions{ClusterName: "bench"}); err != nil {
		return nil, err
	}
	c.Pin = pki.Fingerprint(c.authz.HostCA.PublicKey())
	c.hostCAs = []ssh.PublicKey{c.authz.HostCA.PublicKey(), c.authz.AgentCA.PublicKey()}
	if c.APIToken, err = c.authz.APIToken(); err != nil {
		return nil, err
	}
	c.userCA = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.authz.UserCA.PublicKey())))
	if c.Login, err = currentLogin(); err != nil {
		return nil, err
	}
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	cert, err := c.authz.IssueUserCert(signer.PublicKey(), pki.UserCertRequest{
		User: "bench", Logins: []string{c.Login}, Roles: []string{"admin"}, TTL: 24 * time.Hour, Now: time.Now(),
	})
	if err != nil {
		return nil, err
	}
	if c.signer, err = ssh.NewCertSigner(cert, signer); err != nil {
		return nil, err
	}
	if c.User.Key, err = pki.WriteUserFiles(dir, "bench", keyPEM, cert); err != nil {
		return nil, err
	}
	c.User.Cert = c.User.Key + "-cert.pub"
	// One known_hosts for every hop: the benchmarks measure paths, not
	// trust (the tests keep the proxy and agent CAs apart).
	c.User.KnownHosts = filepath.Join(dir, "known_hosts")
	kh := pki.KnownHostsLine(c.authz.HostCA.PublicKey(), "*") + "\n" + pki.KnownHostsLine(c.authz.AgentCA.PublicKey(), "*") + "\n"
	if err := os.WriteFile(c.User.KnownHosts, []byte(kh), 0o644); err != nil {
		return nil, err
	}
	if cfg.Gossip == "" {
		cfg.Gossip = model.ProfileLocal
	}
	for i := 1; i <= cfg.Proxies; i++ {
		if _, err := c.AddProxy(ctx, i, cfg); err != nil {
			return nil, err
		}
	}
	err = waitUntil(ctx, 30*time.Second, 50*time.Millisecond, "every proxy to see every other", func() bool {
		for _, p := range c.Proxies {
			if p.Proc.Exited() {
				return true // reported below
			}
			st, err := c.Status(p)
			if err != nil || len(st) != len(c.Proxies) {
				return false
			}
		}
		return true
	})
	for _, p := range c.Proxies {
		if p.Proc.Exited() {
			return c, p.Proc.failure()
		}
	}
	if err == nil {
		// Agents join with a token for every name: the scenarios run
		// pools of agents under one name.
		c.Token, err = c.createToken(c.Proxies[0])
	}
	return c, err
}

// AddProxy starts proxy number i (1-based) on 127.0.1.i. Its ports are
// picked free just before it starts, so another process may take one in
// between: a proxy that exits at once is started again on new ports.
func (c *Cluster) AddProxy(ctx context.Context, i int, cfg ClusterConfig) (*ProxyProc, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var p *ProxyProc
		if p, err = c.startProxy(i, cfg); err == nil {
			c.Proxies = append(c.Proxies, p)
			return p, nil
		}
		if p == nil || !p.Proc.Exited() {
			return nil, err
		}
	}
	return nil, err
}

func (c *Cluster) startProxy(i int, cfg ClusterConfig) (*ProxyProc, error) {
	p := &ProxyProc{ID: fmt.Sprintf("proxy-%d", i), IP: fmt.Sprintf("127.0.1.%d", i)}
	for _, a := range []*string{&p.User, &p.Tunnel, &p.HTTP, &p.Gossip, &p.PeerAddr} {
		var err error
		if *a, err = freePort(p.IP); err != nil {
			return nil, err
		}
	}
	seeds := "[]"
	if len(c.Proxies) > 0 {
		seeds = "[" + c.Proxies[0].Gossip + "]"
	}
	p.Config = filepath.Join(c.Dir, p.ID+".yaml")
	text := fmt.Sprintf(`id: %s
region: local
zone: zone-%d
data_dir: %s
auth_dir: %s
listen: {user: %s, tunnel: %s, http: %s}
gossip: {listen: %s, seeds: %s, profile: %s}
peer: {listen: %s}
%s`, p.ID, i, filepath.Join(c.Dir, p.ID), c.Auth, p.User, p.Tunnel, p.HTTP, p.Gossip, seeds, cfg.Gossip, p.PeerAddr, cfg.Extra)
	if err := os.WriteFile(p.Config, []byte(text), 0o644); err != nil {
		return nil, err
	}
	proc, err := startProc(p.ID, filepath.Join(c.Dir, p.ID+".log"), c.env.Binary, "proxy", "--config", p.Config)
	if err != nil {
		return nil, err
	}
	p.Proc = proc
	c.stop.add(proc.Stop)
	// Ready means every port is bound (a port taken in the meantime ends
	// the process instead) and gossip has started.
	deadline := time.Now().Add(30 * time.Second)
	for !c.ready(p) {
		if proc.Exited() {
			return p, proc.failure()
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("%s not ready after 30s; see %s", p.ID, proc.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// ready reports whether p answers /readyz.
func (c *Cluster) ready(p *ProxyProc) bool {
	res, err := c.http.Get("http://" + p.HTTP + "/readyz")
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// AgentConfig is one agent process.
type AgentConfig struct {
	// Proxies are indexes into Cluster.Proxies; the agent's seeds.
	Proxies []int
	// Extra is YAML appended to the agent's config (resources, strategy).
	Extra string
}

// StartAgent writes an agent config and starts `warren agent`.
func (c *Cluster) StartAgent(name string, a AgentConfig) (*Proc, error) {
	var seeds []string
	for _, i := range a.Proxies {
		seeds = append(seeds, c.Proxies[i].Tunnel)
	}
	cfg := filepath.Join(c.Dir, name+".yaml")
	text := fmt.Sprintf(`name: %s
data_dir: %s
proxies: [%s]
join_token: %s
ca_pin: %s
heartbeat_interval: 1s
health_interval: 1s
reconnect_min: 100ms
reconnect_max: 1s
%s`, name, filepath.Join(c.Dir, name), strings.Join(seeds, ", "), c.Token, c.Pin, a.Extra)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	proc, err := startProc(name, filepath.Join(c.Dir, name+".log"), c.env.Binary, "agent", "--config", cfg)
	if err != nil {
		return nil, err
	}
	c.stop.add(proc.Stop)
	return proc, nil
}

// Close stops every process of the cluster, agents first.
func (c *Cluster) Close() { c.stop.run() }

// api GETs a JSON API path from proxy p into v.
func (c *Cluster) api(p *ProxyProc, path string, v any) error {
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
func (c *Cluster) Status(p *ProxyProc) ([]model.MemberStatus, error) {
	var st []model.MemberStatus
	err := c.api(p, "/api/v1/status", &st)
	return st, err
}

// Resources is p's list of resources (as `warren ls`).
func (c *Cluster) Resources(p *ProxyProc) ([]model.Summary, error) {
	var out struct {
		Resources []model.Summary `json:"resources"`
	}
	err := c.api(p, "/api/v1/resources", &out)
	return out.Resources, err
}

// Healthy returns how many healthy agents p lists for name.
func (c *Cluster) Healthy(p *ProxyProc, name string) int {
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

// WaitHealthy waits until every proxy lists name with n healthy agents.
func (c *Cluster) WaitHealthy(ctx context.Context, name string, n int, timeout time.Duration) error {
	return waitUntil(ctx, timeout, 20*time.Millisecond, fmt.Sprintf("%s with %d healthy agents on every proxy", name, n), func() bool {
		for _, p := range c.Proxies {
			if c.Healthy(p, name) != n {
				return false
			}
		}
		return true
	})
}

// Dial opens a Go SSH connection to proxy p as the bench user.
func (c *Cluster) Dial(p *ProxyProc) (*ssh.Client, error) {
	return ssh.Dial("tcp", p.User, c.clientConfig())
}

// createToken makes a join token for every name through proxy p, as the
// bench user (admin).
func (c *Cluster) createToken(p *ProxyProc) (string, error) {
	client, err := c.Dial(p)
	if err != nil {
		return "", err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	out, err := sess.Output("token add --ttl 720h --resources *")
	if err != nil {
		return "", fmt.Errorf("create a join token on %s: %w", p.ID, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *Cluster) clientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            "bench",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(c.signer)},
		HostKeyCallback: pki.HostKeyCallback(c.hostCAs, nil, nil),
		Timeout:         15 * time.Second,
	}
}

// currentLogin is the unix account sessions log in as on targets.
func currentLogin() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("cannot tell the current user: %w", err)
	}
	return u.Username, nil
}

// hostOf returns the host part of host:port.
func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}
