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
