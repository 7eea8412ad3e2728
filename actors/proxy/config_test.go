package proxy

import (
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := LoadConfig("../../deploy/examples/proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckAndSetDefaults(); err != nil {
		t.Fatalf("deploy/examples/proxy.yaml: %v", err)
	}
}

func TestCheckAndSetDefaultsReportsEverything(t *testing.T) {
	in := Config{Listen: Listen{User: "nohostport"}, Tunnel: TunnelConfig{HeartbeatTTL: -1}}
	out, err := in.CheckAndSetDefaults()
	if err == nil {
		t.Fatal("got no error for an empty config")
	}
	for _, want := range []string{"id: required", "data_dir: required", "auth_dir: required", "listen.user", "tunnel.heartbeat_ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if in.Region != "" || in.Listen.Tunnel != "" {
		t.Errorf("CheckAndSetDefaults wrote into the caller's config: %+v", in)
	}
	if out.Listen.Tunnel != DefaultTunnelAddr || out.Tunnel.KeepaliveCount != 3 {
		t.Errorf("defaults not set: got tunnel %q keepalive_count %d", out.Listen.Tunnel, out.Tunnel.KeepaliveCount)
	}
}

// TestConfigBounds: every duration and count has a lower and upper bound,
// and a value outside it is named with its field.
func TestConfigBounds(t *testing.T) {
	base := Config{ID: "p1", DataDir: "/d", AuthDir: "/a"}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"keepalive too fast", func(c *Config) { c.Tunnel.KeepaliveInterval = time.Millisecond }, "tunnel.keepalive_interval: 1ms is outside 100ms to 5m0s"},
		{"keepalive count huge", func(c *Config) { c.Tunnel.KeepaliveCount = 1000 }, "tunnel.keepalive_count: 1000 is outside 1 to 100"},
		{"negative ttl", func(c *Config) { c.Tunnel.HeartbeatTTL = -time.Second }, "tunnel.heartbeat_ttl"},
		{"cert ttl too long", func(c *Config) { c.Tunnel.CertTTL = 10 * 365 * 24 * time.Hour }, "tunnel.cert_ttl"},
		{"attempt longer than dial", func(c *Config) { c.Session.DialTimeout, c.Session.AttemptTimeout = time.Second, 2*time.Second }, "session.attempt_timeout: 2s is longer than session.dial_timeout"},
		{"retention too long", func(c *Config) { c.Tunnel.OfflineRetention = 365 * 24 * time.Hour }, "tunnel.offline_retention"},
		{"recordings kept seconds", func(c *Config) { c.Recordings.Retention = 10 * time.Second }, "recordings.retention: 10s is outside 1m to 100 years"},
		{"log level unknown", func(c *Config) { c.Log.Level = "loud" }, `log.level: unknown log level "loud"`},
	} {
		c := base
		tt.edit(&c)
		_, err := c.CheckAndSetDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.want)
		}
	}
	if _, err := base.CheckAndSetDefaults(); err != nil {
		t.Errorf("the minimal config: %v", err)
	}
}

// TestRegionGossipDefaults: the region's pool is on with profile wan, at
// gossip's IP and port 3022 (0 stays 0), takes its advertised IP from
// gossip.advertise, can be turned off, and a bad address is named.
func TestRegionGossipDefaults(t *testing.T) {
	base := Config{ID: "p1", DataDir: "/d", AuthDir: "/a"}
	for _, tt := range []struct {
		name                   string
		gossip                 GossipConfig
		wantListen, wantAdvert string
		wantErr                string
	}{
		{name: "lan: none", gossip: GossipConfig{}},
		{name: "wan: port 3022", gossip: GossipConfig{Profile: "wan", Listen: "10.0.0.5:3020"}, wantListen: "10.0.0.5:3022"},
		{name: "wan: port 0", gossip: GossipConfig{Profile: "wan", Listen: "127.0.0.1:0"}, wantListen: "127.0.0.1:0"},
		{name: "wan: advertise", gossip: GossipConfig{Profile: "wan", Advertise: "203.0.113.7:3020"}, wantListen: "0.0.0.0:3022", wantAdvert: "203.0.113.7"},
		{name: "wan: off", gossip: GossipConfig{Profile: "wan", RegionListen: "off", Advertise: "203.0.113.7:3020"}},
		{name: "lan: asked for", gossip: GossipConfig{RegionListen: "10.0.0.5:4022"}, wantListen: "10.0.0.5:4022"},
		{name: "not an address", gossip: GossipConfig{Profile: "wan", RegionListen: "3022"}, wantErr: "gossip.region_listen: \"3022\" is not IP:port"},
		{name: "a hostname", gossip: GossipConfig{Profile: "wan", RegionListen: "gossip.local:3022"}, wantErr: "gossip.region_listen: \"gossip.local:3022\": the host must be an IP address"},
		{name: "gossip's own", gossip: GossipConfig{Listen: "10.0.0.5:3020", RegionListen: "10.0.0.5:3020"}, wantErr: "needs a port of its own"},
	} {
		c := base
		c.Gossip = tt.gossip
		out, err := c.CheckAndSetDefaults()
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case out.Gossip.RegionListen != tt.wantListen || out.Gossip.RegionAdvertise != tt.wantAdvert:
			t.Errorf("%s: region_listen %q, region_advertise %q; want %q, %q", tt.name, out.Gossip.RegionListen, out.Gossip.RegionAdvertise, tt.wantListen, tt.wantAdvert)
		}
	}
}

// TestFarListenDefaults: the far port is on by default, at peer.listen's
// host and port 3025 (0 stays 0), can be turned off, and a bad or shared
// address is named.
func TestFarListenDefaults(t *testing.T) {
	base := Config{ID: "p1", DataDir: "/d", AuthDir: "/a"}
	for _, tt := range []struct {
		name       string
		peer       PeerConfig
		wantListen string
		wantErr    string
	}{
		{name: "default", peer: PeerConfig{}, wantListen: "0.0.0.0:3025"},
		{name: "peer's host", peer: PeerConfig{Listen: "10.0.0.5:3021"}, wantListen: "10.0.0.5:3025"},
		{name: "port 0", peer: PeerConfig{Listen: "127.0.0.1:0"}, wantListen: "127.0.0.1:0"},
		{name: "asked for", peer: PeerConfig{FarListen: "10.0.0.5:4025", FarAdvertise: "far.example.com:4025"}, wantListen: "10.0.0.5:4025"},
		{name: "off", peer: PeerConfig{FarListen: "off", FarAdvertise: "far.example.com:4025"}},
		{name: "not an address", peer: PeerConfig{FarListen: "3025"}, wantErr: `peer.far_listen: "3025" is not host:port (or "off")`},
		{name: "peer's own", peer: PeerConfig{Listen: "10.0.0.5:3021", FarListen: "10.0.0.5:3021"}, wantErr: "peer.far_listen: \"10.0.0.5:3021\" is peer.listen's address"},
		{name: "bad advertise", peer: PeerConfig{FarAdvertise: "far.example.com"}, wantErr: `peer.far_advertise: "far.example.com" is not host:port`},
	} {
		c := base
		c.Peer = tt.peer
		out, err := c.CheckAndSetDefaults()
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case out.Peer.FarListen != tt.wantListen:
			t.Errorf("%s: far_listen %q, want %q", tt.name, out.Peer.FarListen, tt.wantListen)
		case tt.wantListen == "" && out.Peer.FarAdvertise != "":
			t.Errorf("%s: far_advertise %q kept with the far port off", tt.name, out.Peer.FarAdvertise)
		}
	}
}
