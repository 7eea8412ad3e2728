package proxy

import (
	"strings"
	"testing"
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
