package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
)

// DefaultRejoinInterval is how often seeds are retried while alone.
const DefaultRejoinInterval = 2 * time.Second

// MaxMetaSize bounds the JSON encoding of a Meta: memberlist carries node
// metadata in every alive message and refuses more than 512 bytes.
const MaxMetaSize = memberlist.MetaMaxSize - 1

// Meta is what every proxy tells the others about itself. It travels as
// JSON in memberlist's node metadata, so it must encode to fewer than 512
// bytes (Validate checks it).
type Meta struct {
	ProxyID    string `json:"id"`
	Region     string `json:"region,omitempty"`
	Zone       string `json:"zone,omitempty"`
	Version    string `json:"version,omitempty"`
	TunnelAddr string `json:"tunnel,omitempty"` // agents' tunnel address
	PeerAddr   string `json:"peer,omitempty"`   // peer gRPC (protoactor remote + data streams)
	// FarPeerAddr is where proxies of other regions open data streams
	// (windows by BDP); "" when the proxy has no such port.
	FarPeerAddr string `json:"farpeer,omitempty"`
	UserAddr    string `json:"user,omitempty"` // users' SSH
	HTTPAddr    string `json:"http,omitempty"`
	// RegionGossip is the proxy's address in its region's gossip pool
	// (Config.RegionBindAddr). Membership sets it and overwrites whatever
	// New or UpdateMeta is given.
	RegionGossip string `json:"rgossip,omitempty"`
}

// Validate reports every problem with m at once, each naming its field.
func (m Meta) Validate() error {
	var errs conf.Errors
	m.check(&errs, "Meta")
	return errs.Err()
}

func (m Meta) check(errs *conf.Errors, prefix string) {
	switch {
	case m.ProxyID == "":
		errs.Addf(prefix+".ProxyID", "required: the proxy's unique id (it is the gossip node name)")
	case !model.ValidName(m.ProxyID):
		errs.Addf(prefix+".ProxyID", "%s is not valid: %s", model.Quote(m.ProxyID), model.NameRule)
	}
	for _, a := range []struct{ field, v string }{
		{"TunnelAddr", m.TunnelAddr}, {"PeerAddr", m.PeerAddr}, {"FarPeerAddr", m.FarPeerAddr},
		{"UserAddr", m.UserAddr}, {"HTTPAddr", m.HTTPAddr}, {"RegionGossip", m.RegionGossip},
	} {
		if a.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs.Addf(prefix+"."+a.field, "%q is not host:port", a.v)
		}
	}
	if b, err := json.Marshal(m); err == nil && len(b) > MaxMetaSize {
		errs.Addf(prefix, "encodes to %d bytes of JSON, more than the %d that gossip carries: shorten the region, zone, version or addresses", len(b), MaxMetaSize)
	}
}

// StateDelegate lets the caller exchange full state on memberlist push/pull
// (anti-entropy, every PushPullInterval with one random member) and on
// joins (join=true, on both sides). Both are called from memberlist's
// goroutines: they must not block for long, and buf must not be kept after
// MergeRemoteState returns.
type StateDelegate interface {
	LocalState(join bool) []byte
	MergeRemoteState(buf []byte, join bool)
}

// Config configures a Membership. The zero value of every field but Meta
// and BindAddr means "default".
type Config struct {
	Meta Meta
	// BindAddr is host:port for gossip on TCP and UDP, e.g. "127.0.0.2:3020"
	// or "0.0.0.0:3020"; port 0 picks a free port (the same for both).
	BindAddr string
	// AdvertiseAddr is the IP (or IP:port) others reach this proxy at;
	// default: the bind IP, or a private IP of this host when bound to
	// 0.0.0.0.
	AdvertiseAddr string
	// Seeds are gossip addresses (host:port) of any proxies of the
	// cluster; empty for the first proxy. Listing this proxy itself is
	// harmless.
	Seeds []string
	// SecretKey encrypts gossip (AES, 16, 24 or 32 bytes); empty means
	// unencrypted, which is logged as a warning.
	SecretKey []byte
	// Profile is model.ProfileLAN (default), ProfileWAN or ProfileLocal
	// (loopback, tests): the presets for the timings below.
	Profile string
	// Timings; zero takes the Profile's value. A suspect has
	// SuspicionMult × max(1, log10(members)) × ProbeInterval to refute,
	// or up to SuspicionMaxMult times that until other members confirm
	// the suspicion (see Timings).
	ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval time.Duration
	SuspicionMult, SuspicionMaxMult                               int
	// RegionBindAddr, if set (host:port, port 0 for a free one), starts a
	// second gossip pool beside the cluster's: only the proxies of
	// Meta.Region join it, with RegionProfile's timings (default lan), and
	// its verdict that a proxy of this region is dead or left removes that
	// proxy from this view at once, before the cluster pool, whose timings
	// must tolerate ocean round trips, has decided. Seeds are not needed:
	// the region's pool is joined at the addresses the cluster pool's
	// members advertise (Meta.RegionGossip). The package doc has the rule.
	RegionBindAddr string
	// RegionAdvertiseAddr is the IP (or IP:port) the region's proxies reach
	// this one at in the region's pool; default as for AdvertiseAddr.
	RegionAdvertiseAddr string
	// RegionProfile picks the region pool's timings (default lan).
	RegionProfile string
	// RejoinInterval is how often seeds are retried while this proxy is
	// alone (default 2s); see the package doc for the other retries.
	RejoinInterval time.Duration
	// State, if set, exchanges full state on push/pull and joins.
	State StateDelegate
	// Dial, if set, opens gossip's TCP streams to other proxies (joins,
	// push/pull, the TCP fallback of probes) in place of a net.Dialer;
	// ctx bounds the dial only. memberlist dials from goroutines of its
	// own, so a caller whose gossip lives in another network namespace
	// (bench's emulated WAN) dials there with this. The gossip sockets
	// themselves are bound by Start, in the namespace of its caller's
	// thread, and UDP leaves from them.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives our logs, and memberlist's own at debug level. Name
	// the component and the proxy on it (With): membership adds no keys of
	// its own, so that none appears twice in a record.
	Logger *slog.Logger
}

// Validate reports every problem with c at once (errors.Join), each naming
// its field. It never changes c.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// settings is a validated Config with its defaults applied.
type settings struct {
	cfg            Config // copy, with Seeds and SecretKey copied too
	bindIP         string // "" is rewritten to 0.0.0.0
	bindPort       int
	advertiseIP    string
	advertisePort  int // 0: the bound port
	rejoinInterval time.Duration
	ml             *memberlist.Config // timings only; the rest is set by New
}

func (c Config) resolve() (settings, error) {
	var errs conf.Errors
	s := settings{cfg: c}
	s.cfg.Seeds = append([]string(nil), c.Seeds...)
	s.cfg.SecretKey = append([]byte(nil), c.SecretKey...)

	c.Meta.check(&errs, "Meta")

	if c.BindAddr == "" {
		errs.Addf("BindAddr", "required: host:port for gossip, like 0.0.0.0:3020")
	} else if host, port, err := splitIPPort(c.BindAddr); err != nil {
		errs.Addf("BindAddr", "%v", err)
	} else {
		s.bindIP, s.bindPort = host, port
		if s.bindIP == "" {
			s.bindIP = "0.0.0.0"
		}
	}
	if c.AdvertiseAddr != "" {
		if ip, err := netip.ParseAddr(c.AdvertiseAddr); err == nil {
			s.advertiseIP = ip.String()
		} else if host, port, err := splitIPPort(c.AdvertiseAddr); err != nil || host == "" {
			errs.Addf("AdvertiseAddr", "%q is not an IP or IP:port", c.AdvertiseAddr)
		} else {
			s.advertiseIP, s.advertisePort = host, port
		}
	}
	for i, seed := range c.Seeds {
		if host, port, err := net.SplitHostPort(seed); err != nil || host == "" || port == "" {
			errs.Addf("Seeds["+strconv.Itoa(i)+"]", "%q is not host:port", seed)
		}
	}
	if c.RegionBindAddr != "" {
		if c.Meta.Region == "" {
			errs.Addf("RegionBindAddr", "a region's pool needs Meta.Region: the region whose proxies join it")
		}
		if _, _, err := splitIPPort(c.RegionBindAddr); err != nil {
			errs.Addf("RegionBindAddr", "%v", err)
		}
		if c.RegionProfile != "" {
			if err := model.CheckProfile(c.RegionProfile); err != nil {
				errs.Addf("RegionProfile", "%v", err)
			}
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		errs.Addf("SecretKey", "is %d bytes; an AES key is 16, 24 or 32 bytes (e.g. 32 random bytes, base64 in gossip.secret_key)", len(c.SecretKey))
	}

	switch c.Profile {
	case "", model.ProfileLAN:
		s.ml = lanConfig()
	case model.ProfileWAN:
		s.ml = wanConfig()
	case model.ProfileLocal:
		s.ml = localConfig()
	default:
		errs.Addf("Profile", "%v", model.CheckProfile(c.Profile))
		s.ml = lanConfig()
	}
	for _, d := range []struct {
		field string
		v     time.Duration
		dst   *time.Duration
	}{
		{"ProbeInterval", c.ProbeInterval, &s.ml.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout, &s.ml.ProbeTimeout},
		{"GossipInterval", c.GossipInterval, &s.ml.GossipInterval},
		{"PushPullInterval", c.PushPullInterval, &s.ml.PushPullInterval},
		{"RejoinInterval", c.RejoinInterval, &s.rejoinInterval},
	} {
		switch {
		case d.v < 0:
			errs.Addf(d.field, "must not be negative, got %v", d.v)
		case d.v > 0:
			*d.dst = d.v
		}
	}
	if s.rejoinInterval == 0 {
		s.rejoinInterval = DefaultRejoinInterval
	}
	for _, m := range []struct {
		field string
		v     int
		dst   *int
	}{
		{"SuspicionMult", c.SuspicionMult, &s.ml.SuspicionMult},
		{"SuspicionMaxMult", c.SuspicionMaxMult, &s.ml.SuspicionMaxTimeoutMult},
	} {
		switch {
		case m.v < 0:
			errs.Addf(m.field, "must not be negative, got %d", m.v)
		case m.v > 0:
			*m.dst = m.v
		}
	}
	if s.ml.ProbeTimeout >= s.ml.ProbeInterval {
		errs.Addf("ProbeTimeout", "%v must be shorter than ProbeInterval (%v): indirect probes run in the rest of the interval", s.ml.ProbeTimeout, s.ml.ProbeInterval)
	}
	// A proxy that crashed and came back on another address (port 0, a
	// new pod IP) may take over its id as soon as the old entry is dead.
	s.ml.DeadNodeReclaimTime = s.ml.ProbeInterval
	return s, errs.Err()
}

// splitIPPort parses "ip:port" or ":port"; the host must be an IP literal
// because memberlist binds and advertises IPs.
func splitIPPort(hp string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", hp)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", hp, portStr)
	}
	if host == "" {
		return "", int(port), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", 0, fmt.Errorf("%q: host must be an IP address, not %q", hp, host)
	}
	return ip.String(), int(port), nil
}

// The presets. Numbers measured on loopback with 3 proxies are in the
// package doc; change them together with it.

func lanConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 1
	c.GossipInterval = 100 * time.Millisecond
	c.PushPullInterval = 15 * time.Second
	c.TCPTimeout = 3 * time.Second
	return c
}

// wanConfig is for proxies in several regions, one pool: the probe
// waits 500 ms and leaves 500 ms for indirect and TCP probes, which cross
// regions in two round trips, so a lost packet seldom raises a suspicion
// (none in 10 minutes at 150 ms and 1% loss, against 10 for lan); the
// shorter suspicion multiplier keeps detection under 6 s. The package
// doc has the figures, and why in-region detection is then slower than 3 s.
func wanConfig() *memberlist.Config {
	c := lanConfig()
	c.ProbeInterval = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.SuspicionMult = 2
	c.TCPTimeout = 5 * time.Second
	return c
}

func localConfig() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 4
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 5 * time.Second
	c.GossipToTheDeadTime = 10 * time.Second
	c.TCPTimeout = time.Second
	return c
}

// Timings are the failure detector's settings a Config resolves to: its
// Profile's preset with the Config's overrides.
type Timings struct {
	ProbeInterval, ProbeTimeout time.Duration
	// SuspicionMult × max(1, log10(members)) × ProbeInterval is the
	// shortest time a suspect has to refute; memberlist starts the window
	// SuspicionMaxMult times longer and shrinks it as other members
	// confirm the suspicion.
	SuspicionMult, SuspicionMaxMult  int
	GossipInterval, PushPullInterval time.Duration
}

// String is the timings in one line, as the bench prints them.
func (t Timings) String() string {
	return fmt.Sprintf("probe %v / %v, suspicion %d (max ×%d), gossip %v", t.ProbeInterval, t.ProbeTimeout, t.SuspicionMult, t.SuspicionMaxMult, t.GossipInterval)
}

// Timings returns the timings c resolves to, or c's problems.
func (c Config) Timings() (Timings, error) {
	s, err := c.resolve()
	if err != nil {
		return Timings{}, err
	}
	return Timings{
		ProbeInterval: s.ml.ProbeInterval, ProbeTimeout: s.ml.ProbeTimeout,
		SuspicionMult: s.ml.SuspicionMult, SuspicionMaxMult: s.ml.SuspicionMaxTimeoutMult,
		GossipInterval: s.ml.GossipInterval, PushPullInterval: s.ml.PushPullInterval,
	}, nil
}
