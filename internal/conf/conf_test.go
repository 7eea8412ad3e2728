package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testConfig has the shapes real Warren configs have: a nested section, a
// list of mappings, a list of scalars and a map.
type testConfig struct {
	Name   string `yaml:"name"`
	Tunnel struct {
		KeepaliveCount int           `yaml:"keepalive_count"`
		Interval       string        `yaml:"interval"`
		HeartbeatTTL   time.Duration `yaml:"heartbeat_ttl"`
	} `yaml:"tunnel"`
	Resources []struct {
		Name   string            `yaml:"name"`
		Port   int               `yaml:"port"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"resources"`
	Ports []int `yaml:"ports"`
}

func TestDecodeValid(t *testing.T) {
	in := `
name: proxy-1
tunnel:
  keepalive_count: 3
  interval: 5s
  heartbeat_ttl: 1m30s
resources:
  - name: web
    port: 8080
    labels: {env: prod}
ports: [22, 3023]
`
	var c testConfig
	if err := Decode([]byte(in), &c); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if c.Name != "proxy-1" || c.Tunnel.KeepaliveCount != 3 || c.Tunnel.Interval != "5s" || c.Tunnel.HeartbeatTTL != 90*time.Second {
		t.Errorf("got name %q tunnel %+v, want proxy-1 {3 5s 1m30s}", c.Name, c.Tunnel)
	}
	if len(c.Resources) != 1 || c.Resources[0].Name != "web" || c.Resources[0].Port != 8080 || c.Resources[0].Labels["env"] != "prod" {
		t.Errorf("got resources %+v, want one web:8080 env=prod", c.Resources)
	}
	if len(c.Ports) != 2 || c.Ports[0] != 22 || c.Ports[1] != 3023 {
		t.Errorf("got ports %v, want [22 3023]", c.Ports)
	}
}

// TestDecodeEmpty checks that a file with no document keeps every default.
func TestDecodeEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n", "---\n"} {
		c := testConfig{Name: "default"}
		c.Tunnel.KeepaliveCount = 7
		if err := Decode([]byte(in), &c); err != nil {
			t.Errorf("Decode(%q): got error %v, want nil", in, err)
		}
		if c.Name != "default" || c.Tunnel.KeepaliveCount != 7 {
			t.Errorf("Decode(%q): got name %q keepalive_count %d, want the defaults default/7", in, c.Name, c.Tunnel.KeepaliveCount)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// want are substrings the message must hold; notWant must not
		// appear in it.
		want    []string
		notWant []string
	}{
		{
			name: "unknown top-level field",
			in:   "name: a\nnmae: b\n",
			want: []string{"line 2", "nmae", "is not a known setting"},
		},
		{
			name:    "unknown nested field",
			in:      "tunnel:\n  keepalive_count: 1\n  keepalive_cnt: 2\n",
			want:    []string{"line 3", "keepalive_cnt", "is not a known setting"},
			notWant: []string{"not found in type", "conf.testConfig"},
		},
		{
			name:    "type error in a nested block mapping",
			in:      "tunnel:\n  keepalive_count: abc\n",
			want:    []string{"line 2", "tunnel.keepalive_count:", "cannot read text `abc` into int"},
			notWant: []string{"!!str", "unmarshal"},
		},
		{
			name: "type error in a list of mappings",
			in:   "resources:\n  - name: web\n    port: eighty\n",
			want: []string{"line 3", "resources[0].port:", "`eighty`"},
		},
		{
			name: "type error in the second list element",
			in:   "resources:\n  - name: web\n    port: 80\n  - name: db\n    port: x\n",
			want: []string{"line 5", "resources[1].port:"},
		},
		{
			name: "mapping where a scalar belongs",
			in:   "tunnel: 5\n",
			want: []string{"line 1", "tunnel:", "cannot read int `5`"},
		},
		{
			name: "type error in a block list of scalars",
			in:   "ports:\n  - 22\n  - ssh\n",
			want: []string{"line 3", "ports[1]:", "`ssh`"},
		},
		{
			name: "two errors are both reported",
			in:   "tunnel:\n  keepalive_count: abc\nresources:\n  - port: x\n",
			want: []string{"tunnel.keepalive_count:", "resources[0].port:", "; "},
		},
		// On these, several values share the line of the bad one; the
		// message must still name the bad one.
		{
			name:    "type error in a flow mapping",
			in:      "tunnel: {keepalive_count: abc, interval: 5s}\n",
			want:    []string{"line 1", "tunnel.keepalive_count:", "`abc`"},
			notWant: []string{"tunnel.interval"},
		},
		{
			name:    "type error in a flow list",
			in:      "ports: [22, ssh, 3023]\n",
			want:    []string{"line 1", "ports[1]:", "`ssh`"},
			notWant: []string{"ports[2]"},
		},
		{
			name:    "list where a string belongs",
			in:      "resources:\n  - name: [web]\n",
			want:    []string{"line 2", "resources[0].name:", "cannot read seq into string"},
			notWant: []string{"resources[0].name["},
		},
		// A duration is Go duration text; a bare number is the usual slip.
		{
			name:    "duration without a unit",
			in:      "tunnel:\n  heartbeat_ttl: 30\n",
			want:    []string{"line 2", "tunnel.heartbeat_ttl:", "`30` is not a duration", "durations take units, like 30s"},
			notWant: []string{"time.Duration", "unmarshal"},
		},
		{
			name: "duration as quoted text without a unit",
			in:   "tunnel:\n  heartbeat_ttl: \"30\"\n",
			want: []string{"line 2", "tunnel.heartbeat_ttl:", "durations take units, like 30s"},
		},
		{
			name: "fractional duration without a unit",
			in:   "tunnel: {heartbeat_ttl: 1.5}\n",
			want: []string{"line 1", "tunnel.heartbeat_ttl:", "`1.5` is not a duration", "like 30s"},
		},
		{
			name: "invalid YAML",
			in:   "tunnel: [\n",
			want: []string{"invalid YAML", "line"},
		},
		{
			name: "tab indentation",
			in:   "tunnel:\n\tkeepalive_count: 1\n",
			want: []string{"invalid YAML"},
		},
		{
			name: "a list at the top",
			in:   "- a\n- b\n",
			want: []string{"line 1", "cannot read seq into conf.testConfig"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c testConfig
			err := Decode([]byte(tt.in), &c)
			if err == nil {
				t.Fatalf("Decode(%q): got nil error, want one holding %q", tt.in, tt.want)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Decode(%q): got %q, want it to hold %q", tt.in, msg, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("Decode(%q): got %q, want it not to hold %q", tt.in, msg, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("name: n1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("name: n1\ncolour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var c testConfig
	if err := Load(good, &c); err != nil || c.Name != "n1" {
		t.Errorf("Load(good): got name %q, err %v; want n1, nil", c.Name, err)
	}

	err := Load(bad, &c)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "colour") {
		t.Errorf("Load(bad): got %v, want an error naming the file %s and the field colour", err, bad)
	}

	missing := filepath.Join(dir, "missing.yaml")
	err = Load(missing, &c)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing): got %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestErrors(t *testing.T) {
	var errs Errors
	if err := errs.Err(); err != nil {
		t.Fatalf("empty Errors: got %v, want nil", err)
	}
	errs.Addf("tunnel.keepalive_count", "must be at least %d", 1)
	errs.Addf("resources[0].name", "is empty")
	err := errs.Err()
	if err == nil {
		t.Fatal("got nil error after two Addf, want both problems")
	}
	want := "tunnel.keepalive_count: must be at least 1\nresources[0].name: is empty"
	if got := err.Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzDecode checks that no input makes Decode panic, and that an input it
// accepts decodes the same way twice.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"",
		"name: a\ntunnel:\n  keepalive_count: 3\n",
		"tunnel: {keepalive_count: abc, interval: 5s}\n",
		"resources:\n  - name: [web]\n    port: x\n",
		"ports: [1, x, 3]\n",
		"a: &a [*a]\n",
		"tunnel: [\n",
		"- a\n- b\n",
		"name: !!binary aGVsbG8=\n",
		"---\nname: a\n---\nname: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a, b testConfig
		errA := Decode(data, &a)
		if errA != nil {
			if errA.Error() == "" {
				t.Fatalf("Decode(%q): error with an empty message", data)
			}
			return
		}
		if errB := Decode(data, &b); errB != nil {
			t.Fatalf("Decode(%q) succeeded once, then failed: %v", data, errB)
		}
	})
}
