package agent

import (
	"strings"
	"testing"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := LoadConfig("../../deploy/examples/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckAndSetDefaults(); err != nil {
		t.Fatalf("deploy/examples/agent.yaml: %v", err)
	}
}

func TestCheckAndSetDefaultsReportsEverything(t *testing.T) {
	in := Config{
		Proxies: []string{"nope"},
		Resources: []ResourceConfig{
			{Name: "bad name", Kind: "ssh"},
			{Name: "db", Kind: "tcp"},
			{Name: "db", Kind: "udp"},
			{Name: "x", Kind: "ssh", Addr: "1.2.3.4:22"},
		},
		HeartbeatInterval: -1,
	}
	_, err := in.CheckAndSetDefaults()
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{
		"data_dir: required", "proxies[0]", "resources[0].name", "resources[1].addr",
		`resources[2].name: "db" is listed twice`, "resources[2].kind", "resources[3].addr", "heartbeat_interval",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}
