package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
)

// Cluster is a Warren cluster of separate processes on loopback (a
// harness.Cluster): proxies on 127.0.1.1, 127.0.1.2, … (one address each,
// as on separate hosts) and the agents a scenario starts, plus a user
// ("bench") with a certificate for every login.
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
	h       *harness.Cluster
	userCA  string          // authorized_keys line of the user CA, for sshd
	hostCAs []ssh.PublicKey // proxy and agent host CAs
	signer  ssh.Signer
	stop    cleanups
}

// UserFiles are the bench user's key, certificate and known_hosts.
type UserFiles struct {
	Key, Cert, KnownHosts string
}

// ProxyProc is one proxy process, its addresses and config file.
type ProxyProc = harness.Proxy

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
	c := &Cluster{Dir: dir, env: env}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.h, err = harness.New(dir, "bench"); err != nil {
		return nil, err
	}
	if cfg.Gossip != "" {
		c.h.Gossip = cfg.Gossip
	}
	c.h.ProxyExtra = cfg.Extra
	c.Auth, c.Pin, c.APIToken = c.h.AuthDir, c.h.Pin, c.h.APIToken
	authz := c.h.Auth
	c.hostCAs = []ssh.PublicKey{authz.HostCA.PublicKey(), authz.AgentCA.PublicKey()}
	c.userCA = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(authz.UserCA.PublicKey())))
	if c.Login, err = currentLogin(); err != nil {
		return nil, err
	}
	u, err := c.h.IssueUser("bench", []string{c.Login}, []string{"admin"}, 24*time.Hour, dir)
	if err != nil {
		return nil, err
	}
	c.signer = u.Signer
	c.User.Key, c.User.Cert = u.Key, u.Cert
	// One known_hosts for every hop: the benchmarks measure paths, not
	// trust (the tests keep the proxy and agent CAs apart).
	c.User.KnownHosts = filepath.Join(dir, "known_hosts")
	kh := pki.KnownHostsLine(authz.HostCA.PublicKey(), "*") + "\n" + pki.KnownHostsLine(authz.AgentCA.PublicKey(), "*") + "\n"
	if err := os.WriteFile(c.User.KnownHosts, []byte(kh), 0o644); err != nil {
		return nil, err
	}
	for i := 1; i <= cfg.Proxies; i++ {
		if _, err := c.AddProxy(ctx, i); err != nil {
			return nil, err
		}
	}
	err = harness.Until(ctx, 30*time.Second, 50*time.Millisecond, "every proxy to see every other", func() (bool, error) {
		for _, p := range c.Proxies {
			if p.Proc.Exited() {
				return false, p.Proc.Failure()
			}
			st, err := c.Status(p)
			if err != nil || len(st) != len(c.Proxies) {
				return false, nil
			}
		}
		return true, nil
	})
	if err == nil {
		// Agents join with a token for every name: the scenarios run
		// pools of agents under one name.
		c.Token, err = c.createToken(c.Proxies[0])
	}
	return c, err
}

// AddProxy starts proxy number i (1-based) on 127.0.1.i, zone-i of region
// local, joining through the first proxy.
func (c *Cluster) AddProxy(ctx context.Context, i int) (*ProxyProc, error) {
	p := c.h.NewProxy(i, fmt.Sprintf("127.0.1.%d", i), "local", fmt.Sprintf("zone-%d", i))
	if len(c.Proxies) > 0 {
		p.Seeds = []string{c.Proxies[0].Gossip}
	}
	err := c.h.StartProxy(ctx, p, func(config string) harness.Command {
		return harness.Command{Bin: c.env.Binary, Args: []string{"proxy", "--config", config}}
	})
	if p.Proc != nil {
		c.stop.add(p.Proc.Stop)
	}
	if err == nil {
		err = c.h.WaitReady(ctx, p)
	}
	if err != nil {
		return nil, err
	}
	c.Proxies = append(c.Proxies, p)
	return p, nil
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
	ag := &harness.Agent{Name: name, Token: c.Token, Extra: a.Extra}
	for _, i := range a.Proxies {
		ag.Proxies = append(ag.Proxies, c.Proxies[i].Tunnel)
	}
	if err := c.h.WriteAgentConfig(ag); err != nil {
		return nil, err
	}
	proc, err := startProc(name, filepath.Join(c.Dir, name+".log"), c.env.Binary, "agent", "--config", ag.Config)
	if err != nil {
		return nil, err
	}
	c.stop.add(proc.Stop)
	return proc, nil
}

// Close stops every process of the cluster, agents first.
func (c *Cluster) Close() { c.stop.run() }

// Status is p's view of the cluster (as `warren status`).
func (c *Cluster) Status(p *ProxyProc) ([]model.MemberStatus, error) { return c.h.Status(p) }

// Healthy returns how many healthy agents p lists for name.
func (c *Cluster) Healthy(p *ProxyProc, name string) int { return c.h.Healthy(p, name) }

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
