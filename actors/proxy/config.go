package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/resume"
)

// Default ports, see DESIGN.md.
const (
	DefaultUserAddr   = "0.0.0.0:" + model.PortUser
	DefaultTunnelAddr = "0.0.0.0:" + model.PortTunnel
	DefaultHTTPAddr   = "0.0.0.0:" + model.PortHTTP
	DefaultGossipAddr = "0.0.0.0:" + model.PortGossip
	DefaultPeerAddr   = "0.0.0.0:" + model.PortPeer
)

// Config is a proxy's configuration, read from proxy.yaml.
type Config struct {
	// ID names the proxy in the cluster; it must be unique.
	ID     string `yaml:"id"`
	Region string `yaml:"region"`
	Zone   string `yaml:"zone"`
	// DataDir holds the proxy's own state: its host key, the catalog
	// (Pebble) and the audit log (bbolt).
	DataDir string `yaml:"data_dir"`
	// AuthDir holds the cluster identity written by `warren init`.
	AuthDir string `yaml:"auth_dir"`
	Listen  Listen `yaml:"listen"`
	// PublicAddr is the user address as users reach it (host:port); it
	// goes into hints and the proxy's host certificate. Default: the
	// user listen address.
	PublicAddr string         `yaml:"public_addr"`
	Tunnel     TunnelConfig   `yaml:"tunnel"`
	HTTP       HTTPConfig     `yaml:"http"`
	Session    SessionConfig  `yaml:"session"`
	Shutdown   ShutdownConfig `yaml:"shutdown"`
	// Log is the log's format and level (`warren proxy` builds Logger
	// from it; its flags win).
	Log    conf.Log     `yaml:"log"`
	Gossip GossipConfig `yaml:"gossip"`
	Peer   PeerConfig   `yaml:"peer"`
	// Recordings bounds the session recordings agents upload (see
	// recordings.go).
	Recordings RecordingsConfig `yaml:"recordings"`

	Logger *slog.Logger     `yaml:"-"`
	Clock  func() time.Time `yaml:"-"`
}

// Listen holds the listen addresses; ":0" ports pick free ones.
type Listen struct {
	User   string `yaml:"user"`
	Tunnel string `yaml:"tunnel"`
	HTTP   string `yaml:"http"`
}

// TunnelConfig tunes agent tunnels.
type TunnelConfig struct {
	// KeepaliveInterval and KeepaliveCount: a tunnel whose agent misses
	// KeepaliveCount keepalives in a row is closed (default 2s × 3: a
	// silent agent is caught within about 6 s).
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	KeepaliveCount    int           `yaml:"keepalive_count"`
	// HeartbeatTTL: a resource not heartbeated for this long is offline
	// even while its tunnel is up (default 30s; agents beat every 5s).
	HeartbeatTTL time.Duration `yaml:"heartbeat_ttl"`
	// OfflineRetention: how long an offline resource stays listed
	// (default 24h).
	OfflineRetention time.Duration `yaml:"offline_retention"`
	// CertTTL is the validity of the host certificates issued to agents
	// (default 24h). Agents renew theirs on every tunnel and at half its
	// life, until their renewal grant ends (see `warren token add
	// --renew-for`).
	CertTTL time.Duration `yaml:"cert_ttl"`
}

// HTTPConfig bounds the HTTP endpoint's connections.
type HTTPConfig struct {
	// IdleTimeout closes a keep-alive connection idle this long (default
	// 60s); ReadHeaderTimeout bounds a request's headers (default 10s).
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// MetricsOpen serves /metrics without the API token, for a Prometheus
	// that cannot send one; the metrics name no user, session or secret
	// (default false: the token is required).
	MetricsOpen bool `yaml:"metrics_open"`
}

// GossipConfig places the proxy in the cluster's membership.
type GossipConfig struct {
	// Listen is the gossip address (TCP and UDP); default 0.0.0.0:3020.
	Listen string `yaml:"listen"`
	// Advertise is the address other proxies use, when Listen is not.
	Advertise string `yaml:"advertise"`
	// Seeds are gossip addresses of other proxies; any live one will do.
	// Empty for the first proxy.
	Seeds []string `yaml:"seeds"`
	// SecretKey (base64 of 16, 24 or 32 bytes) encrypts gossip. Default:
	// the gossip_key file of auth_dir, written by `warren init`.
	SecretKey string `yaml:"secret_key"`
	// Profile picks membership timings: lan (default), wan or local.
	Profile string `yaml:"profile"`
	// RegionListen is the region's gossip pool (TCP and UDP): only the
	// proxies of this proxy's region join it, with lan timings, and its
	// verdict that one of them is dead takes it out at once, where the
	// cluster's pool must allow for round trips across oceans. Default:
	// with profile wan, the IP of listen at port 3022 (port 0 when
	// listen's is 0); otherwise none. "off" turns it off.
	RegionListen string `yaml:"region_listen"`
	// RegionAdvertise is the address the region's proxies use for it,
	// when RegionListen is not; default: the IP of advertise, if set.
	RegionAdvertise string `yaml:"region_advertise"`
}

// RegionGossipOff turns the region's gossip pool off (gossip.region_listen).
const RegionGossipOff = "off"

// resolveRegionGossip fills in the region pool's addresses: on by default
// with profile wan only (one region needs none: its one pool has lan
// timings already).
// resolveFarListen fills in peer.far_listen: peer.listen's host on the
// default port (or port 0, picked by the system, when peer.listen's is),
// "" when off.
func (c *Config) resolveFarListen(errs *conf.Errors) {
	pc := &c.Peer
	switch pc.FarListen {
	case FarListenOff:
		pc.FarListen, pc.FarAdvertise = "", ""
		return
	case "":
		var ok bool
		if pc.FarListen, ok = beside(pc.Listen, model.PortPeerFar); !ok {
			return // reported for peer.listen
		}
	default:
		if _, _, err := net.SplitHostPort(pc.FarListen); err != nil {
			errs.Addf("peer.far_listen", "%q is not host:port (or %q)", pc.FarListen, FarListenOff)
			return
		}
	}
	if pc.FarListen == pc.Listen && !strings.HasSuffix(pc.Listen, ":0") {
		errs.Addf("peer.far_listen", "%q is peer.listen's address: the far port needs a port of its own", pc.FarListen)
	}
	if pc.FarAdvertise != "" {
		if _, _, err := net.SplitHostPort(pc.FarAdvertise); err != nil {
			errs.Addf("peer.far_advertise", "%q is not host:port", pc.FarAdvertise)
		}
	}
}

// beside is the default address of a second listener next to listen: its
// host on port, or port 0 when listen's is 0 (the system picks both, as in
// tests). ok is false when listen is not host:port.
func beside(listen, port string) (addr string, ok bool) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", false
	}
	if p == "0" {
		port = "0"
	}
	return net.JoinHostPort(host, port), true
}

func (c *Config) resolveRegionGossip(errs *conf.Errors) {
	g := &c.Gossip
	switch g.RegionListen {
	case RegionGossipOff:
		g.RegionListen, g.RegionAdvertise = "", ""
		return
	case "":
		if g.Profile != model.ProfileWAN {
			return
		}
		var ok bool
		if g.RegionListen, ok = beside(g.Listen, model.PortRegionGossip); !ok {
			return // reported for gossip.listen
		}
	default:
		host, _, err := net.SplitHostPort(g.RegionListen)
		if err != nil {
			errs.Addf("gossip.region_listen", "%q is not IP:port (or %q)", g.RegionListen, RegionGossipOff)
			return
		}
		if _, err := netip.ParseAddr(host); host != "" && err != nil {
			errs.Addf("gossip.region_listen", "%q: the host must be an IP address, like 0.0.0.0:%s", g.RegionListen, model.PortRegionGossip)
			return
		}
		if g.RegionListen == g.Listen {
			errs.Addf("gossip.region_listen", "%q is gossip.listen's address: the region's pool needs a port of its own", g.RegionListen)
		}
	}
	if g.RegionAdvertise == "" && g.Advertise != "" {
		if host, _, err := net.SplitHostPort(g.Advertise); err == nil {
			g.RegionAdvertise = host
		} else {
			g.RegionAdvertise = g.Advertise
		}
	}
}

// PeerConfig places the proxy's peer endpoint: protoactor remote for
// control messages and the data streams, on one gRPC port with mutual TLS.
type PeerConfig struct {
	// Listen defaults to 0.0.0.0:3021.
	Listen string `yaml:"listen"`
	// Advertise is the address other proxies dial, when Listen is not
	// (required when Listen is on all interfaces and public_addr names no
	// host).
	Advertise string `yaml:"advertise"`
	// FarListen is a second port for the data streams of proxies of other
	// regions, whose windows follow the path's bandwidth-delay product
	// (peer.listen's are fixed at 1 MiB a stream, which held an upload
	// across an ocean to 1 MiB per round trip). Default: peer.listen's
	// host, port 3025; "off" turns it off (such streams then come to
	// peer.listen).
	FarListen string `yaml:"far_listen"`
	// FarAdvertise is the address other proxies dial for FarListen
	// (default: the host of the advertised peer address, FarListen's port).
	FarAdvertise string `yaml:"far_advertise"`
}

// FarListenOff is peer.far_listen's value that turns the far port off.
const FarListenOff = "off"

// ShutdownConfig is how the proxy drains when it is told to stop (SIGTERM,
// or `warren proxy drain`).
type ShutdownConfig struct {
	// Grace is how long the sessions that entered through this proxy may
	// go on once it drains (default 30s); their users are told when they
	// end. A second SIGTERM ends them at once.
	Grace time.Duration `yaml:"grace"`
}

// SessionConfig tunes user sessions.
type SessionConfig struct {
	// DialTimeout bounds the connect phase of a session, over all
	// candidate agents (default 15s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// AttemptTimeout bounds one candidate agent before the session tries
	// the next (default 3s): a stopped agent costs at most this much
	// before its keepalives catch it.
	AttemptTimeout time.Duration `yaml:"attempt_timeout"`
	// ResumeTimeout is how long a session whose path to its agent broke
	// (a peer proxy died, the agent's tunnel dropped) looks for another
	// path before it ends (default 1m); the user's SSH client sees a
	// pause. ResumeOff turns resumable sessions off, for agents older
	// than the proxies (they cannot serve them).
	ResumeTimeout time.Duration `yaml:"resume_timeout"`
	ResumeOff     bool          `yaml:"resume_off"`
	// Strategy picks an agent for a new session among the healthy ones:
	// default (this proxy's tunnels, then this region, then any), random,
	// least_sessions (power of two choices on live sessions), or nearest
	// (lowest measured round trip: tunnel keepalives plus peer links).
	Strategy string `yaml:"strategy"`
}

// LoadConfig reads and checks a proxy config file.
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
	if c.ID == "" {
		errs.Addf("id", "required: a unique name for this proxy, like proxy-1")
	} else if err := model.CheckName("proxy id", c.ID); err != nil {
		errs.Addf("id", "%v", err)
	}
	if c.DataDir == "" {
		errs.Addf("data_dir", "required: a directory for the proxy's state")
	}
	if c.AuthDir == "" {
		errs.Addf("auth_dir", "required: the directory `warren init --data-dir DIR` wrote")
	}
	c.Recordings.checkAndSetDefaults(&errs)
	if c.Region == "" {
		c.Region = "default"
	}
	c.Log.Check("log", &errs)
	if c.Listen.User == "" {
		c.Listen.User = DefaultUserAddr
	}
	if c.Listen.Tunnel == "" {
		c.Listen.Tunnel = DefaultTunnelAddr
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = DefaultHTTPAddr
	}
	if c.Gossip.Listen == "" {
		c.Gossip.Listen = DefaultGossipAddr
	}
	if c.Peer.Listen == "" {
		c.Peer.Listen = DefaultPeerAddr
	}
	c.resolveFarListen(&errs)
	if c.Gossip.Profile == "" {
		c.Gossip.Profile = model.ProfileLAN
	} else if err := model.CheckProfile(c.Gossip.Profile); err != nil {
		errs.Addf("gossip.profile", "%v", err)
	}
	if c.Gossip.SecretKey != "" {
		if _, err := pki.DecodeGossipKey(c.Gossip.SecretKey); err != nil {
			errs.Addf("gossip.secret_key", "%v", err)
		}
	}
	c.resolveRegionGossip(&errs)
	for i, seed := range c.Gossip.Seeds {
		if _, _, err := net.SplitHostPort(seed); err != nil {
			errs.Addf(fmt.Sprintf("gossip.seeds[%d]", i), "%q is not host:port", seed)
		}
	}
	for field, addr := range map[string]string{
		"listen.user": c.Listen.User, "listen.tunnel": c.Listen.Tunnel, "listen.http": c.Listen.HTTP,
		"gossip.listen": c.Gossip.Listen, "peer.listen": c.Peer.Listen,
	} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs.Addf(field, "%q is not host:port", addr)
		}
	}
	if c.PublicAddr == "" {
		c.PublicAddr = c.Listen.User
	} else if _, _, err := net.SplitHostPort(c.PublicAddr); err != nil {
		errs.Addf("public_addr", "%q is not host:port", c.PublicAddr)
	}
	durations := []struct {
		field         string
		v             *time.Duration
		def, min, max time.Duration
	}{
		{"tunnel.keepalive_interval", &c.Tunnel.KeepaliveInterval, 2 * time.Second, 100 * time.Millisecond, 5 * time.Minute},
		{"tunnel.heartbeat_ttl", &c.Tunnel.HeartbeatTTL, 30 * time.Second, time.Second, time.Hour},
		{"tunnel.offline_retention", &c.Tunnel.OfflineRetention, 24 * time.Hour, time.Minute, 30 * 24 * time.Hour},
		{"tunnel.cert_ttl", &c.Tunnel.CertTTL, 24 * time.Hour, 10 * time.Minute, pki.MaxHostCertTTL},
		{"session.dial_timeout", &c.Session.DialTimeout, 15 * time.Second, 100 * time.Millisecond, 5 * time.Minute},
		{"session.attempt_timeout", &c.Session.AttemptTimeout, 3 * time.Second, 100 * time.Millisecond, 5 * time.Minute},
		{"session.resume_timeout", &c.Session.ResumeTimeout, time.Minute, time.Second, resume.MaxDetach},
		{"shutdown.grace", &c.Shutdown.Grace, 30 * time.Second, 100 * time.Millisecond, time.Hour},
		{"http.idle_timeout", &c.HTTP.IdleTimeout, 60 * time.Second, 100 * time.Millisecond, time.Hour},
		{"http.read_header_timeout", &c.HTTP.ReadHeaderTimeout, 10 * time.Second, 100 * time.Millisecond, 5 * time.Minute},
	}
	for _, d := range durations {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < d.min || *d.v > d.max:
			errs.Addf(d.field, "%s is outside %s to %s", *d.v, d.min, d.max)
		}
	}
	if c.Session.AttemptTimeout > c.Session.DialTimeout {
		errs.Addf("session.attempt_timeout", "%s is longer than session.dial_timeout (%s), which bounds all attempts together", c.Session.AttemptTimeout, c.Session.DialTimeout)
	}
	if c.Session.Strategy == "" {
		c.Session.Strategy = model.StrategyDefault
	} else if err := model.CheckStrategy(c.Session.Strategy); err != nil {
		errs.Addf("session.strategy", "%v", err)
	}
	switch {
	case c.Tunnel.KeepaliveCount == 0:
		c.Tunnel.KeepaliveCount = 3
	case c.Tunnel.KeepaliveCount < 1 || c.Tunnel.KeepaliveCount > 100:
		errs.Addf("tunnel.keepalive_count", "%d is outside 1 to 100", c.Tunnel.KeepaliveCount)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c, errs.Err()
}
