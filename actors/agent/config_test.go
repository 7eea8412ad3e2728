package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

func TestConfigBounds(t *testing.T) {
	base := Config{DataDir: "/d", Proxies: []string{"p:3024"}, Resources: []ResourceConfig{{Name: "n", Kind: "ssh"}}}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"heartbeat too fast", func(c *Config) { c.HeartbeatInterval = time.Millisecond }, "heartbeat_interval: 1ms is outside"},
		{"backoff upside down", func(c *Config) { c.ReconnectMin, c.ReconnectMax = 5*time.Second, time.Second }, "reconnect_min: 5s is longer than reconnect_max"},
		{"too many tunnels", func(c *Config) { c.ConnectionCount = 100 }, "connection_count: 100 is outside 1 to 16"},
		{"label key", func(c *Config) {
			c.Resources = []ResourceConfig{{Name: "n", Kind: "ssh", Labels: map[string]string{"a b": "x"}}}
		}, "resources[0].labels"},
		{"too many resources", func(c *Config) {
			c.Resources = nil
			for i := range 300 {
				c.Resources = append(c.Resources, ResourceConfig{Name: fmt.Sprintf("r%d", i), Kind: "ssh"})
			}
		}, "an agent may serve at most 256"},
	} {
		c := base
		tt.edit(&c)
		_, err := c.CheckAndSetDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// TestJoinTokenFile: a token file others can read is refused, as the
// proxy refuses its own; comments and blank lines are skipped; one token.
func TestJoinTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := fileWriter(t, dir)
	if tok, err := readTokenFile("join_token_file", write("ok", "# from warren token add\n\n  abc123  \n", 0o600), "from `warren token add`"); err != nil || tok != "abc123" {
		t.Errorf("a good file: got %q, %v", tok, err)
	}
	for _, tt := range []struct {
		path, want string
	}{
		{write("open", "abc\n", 0o644), "has mode 0644; run chmod 600"},
		{write("two", "a\nb\n", 0o600), "holds 2 tokens"},
		{write("none", "# only a comment\n", 0o600), "holds 0 tokens"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := readTokenFile("join_token_file", tt.path, "from `warren token add`"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", filepath.Base(tt.path), err, tt.want)
		}
	}
}

// fileWriter returns a function that writes a file of text into dir with
// exactly mode (whatever the umask) and returns its path.
func fileWriter(t *testing.T, dir string) func(name, text string, mode os.FileMode) string {
	return func(name, text string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
