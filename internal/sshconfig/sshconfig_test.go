package sshconfig

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// TestWriteConnectEntries: entries through `warren connect` carry a
// ProxyCommand and the alias every proxy's certificate names instead of
// a HostName; resources and the tcp hints go through Jump.
func TestWriteConnectEntries(t *testing.T) {
	c := sample("node1")
	c.Proxies = append(c.Proxies,
		Proxy{Name: "warren", Command: Command("/usr/bin/warren", "connect", "--proxies", "/k/proxies"), HostKeyAlias: "proxy/any"},
		Proxy{Name: "warren-eu", Command: Command("/usr/bin/warren", "connect", "--proxies", "/k/proxies", "--region", "eu"), HostKeyAlias: "proxy/any"},
		Proxy{Name: "warren-us", Addr: "10.0.1.1:3023"},
	)
	c.Jump = "warren"
	var b strings.Builder
	if err := Write(&b, c); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# BEGIN warren proxy-1\n",
		"Host warren\n    ProxyCommand /usr/bin/warren connect --proxies /k/proxies\n    HostKeyAlias proxy/any\n    User alice\n",
		"Host warren-eu\n    ProxyCommand /usr/bin/warren connect --proxies /k/proxies --region eu\n",
		"Host warren-us\n    HostName 10.0.1.1\n    Port 3023\n",
		"Host node1\n    ProxyJump warren\n",
		"# tcp resource db: ssh -N -L 5432:db:5432 warren   (or ssh -W db:5432 warren)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh_config lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteRefusesAmbiguousHosts(t *testing.T) {
	for name, c := range map[string]Config{
		"resource named like an entry": sample("node1", "proxy-1"),
		"jump through nothing":         func() Config { c := sample("node1"); c.Jump = "warren"; return c }(),
		"command without alias":        func() Config { c := sample(); c.Proxies[0].Command = "warren connect"; return c }(),
	} {
		if err := Write(io.Discard, c); err == nil {
			t.Errorf("%s: written", name)
		}
	}
}

// TestCommandQuotes: the shell ssh runs a ProxyCommand with gets every
// argument back as it was, and ssh's %-expansion leaves '%' alone.
func TestCommandQuotes(t *testing.T) {
	args := []string{"/opt/my warren/warren", "connect", "--state", "/home/o'neil/.warren/state", "--proxies", "/tmp/[x]*$HOME;`id`", ""}
	line := Command(args...)
	if !strings.Contains(Command("/a%b"), "/a%%b") {
		t.Errorf("%% not doubled: %s", Command("/a%b"))
	}
	// ssh would expand %% to %; none here. Run it through sh as ssh does.
	out, err := exec.Command("sh", "-c", "printf '%s\\n' "+line).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); !slices.Equal(got, args) {
		t.Errorf("sh gave back %q from %s, want %q", got, line, args)
	}
}
