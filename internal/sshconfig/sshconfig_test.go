package sshconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample(hosts ...string) Config {
	return Config{
		Proxies: []Proxy{{Name: "proxy-1", Addr: "127.0.0.1:3023"}}, User: "alice", Login: "root",
		Identity: "/k/alice", KnownHosts: "/k/known_hosts", ResourceKnownHosts: "/k/known_hosts_resources",
		Hosts: hosts, TCP: []TCP{{Name: "db", Port: 5432}, {Name: "web", Port: 80}},
	}
}

func TestWriteListsOnlySSHResourcesAsHosts(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, sample("node1", "node2")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Host node1 node2\n", "UserKnownHostsFile /k/known_hosts_resources",
		"# tcp resource db: ssh -N -L 5432:db:5432 proxy-1", "# tcp resource web: ssh -N -L 10080:web:80 proxy-1",
		"# BEGIN warren proxy-1\n", "# END warren proxy-1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh_config lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Host ") && (strings.Contains(l, " db") || strings.Contains(l, " web")) {
			t.Errorf("a tcp resource is an SSH host: %q", l)
		}
	}
}

// TestUpdateIsIdempotent: writing the block again replaces it (no
// duplicate), picks up new resources, and leaves the rest of the file and
// its mode alone.
func TestUpdateIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".ssh", "config")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	before := "Host other\n    User me\n"
	if err := os.WriteFile(path, []byte(before), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, hosts := range [][]string{{"node1"}, {"node1"}, {"node1", "node2"}} {
		if err := Update(path, sample(hosts...)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	text := string(got)
	if n := strings.Count(text, "# BEGIN warren proxy-1"); n != 1 {
		t.Errorf("%d Warren blocks after three updates, want 1:\n%s", n, text)
	}
	if !strings.HasPrefix(text, before) || !strings.Contains(text, "Host node1 node2\n") {
		t.Errorf("file after updates:\n%s", text)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's own 0640 kept", fi.Mode().Perm())
	}
	os.WriteFile(path, []byte(before+"# BEGIN warren proxy-1\nHost x\n"), 0o600)
	if err := Update(path, sample("node1")); err == nil || !strings.Contains(err.Error(), "damaged Warren block") {
		t.Errorf("a block without its END: got %v", err)
	}
}
