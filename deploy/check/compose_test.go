package check

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/transport/pki"
)

const composeDir = "../compose"

// loadCompose loads compose.yaml as `docker compose config` does: compose-go's
// project loader with the compose-spec schema validation, interpolation,
// normalization and consistency checks on, and no environment but env.
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(composeDir, "compose.yaml")},
		cli.WithWorkingDirectory(composeDir),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	if p.Name != "warren" {
		t.Errorf("project name %q, want warren", p.Name)
	}
	wantServices := []string{"agent-eu", "agent-us", "init", "proxy-eu-1", "proxy-eu-2", "proxy-us-1", "proxy-us-2", "sshd-eu", "sshd-us"}
	if got := p.ServiceNames(); !slices.Equal(slices.Sorted(slices.Values(got)), wantServices) {
		t.Fatalf("services %v, want %v", got, wantServices)
	}
	for _, n := range []string{"eu", "us", "wan"} {
		if _, ok := p.Networks[n]; !ok {
			t.Errorf("no network %s", n)
		}
	}
	if got := p.VolumeNames(); !slices.Contains(got, "auth") || !slices.Contains(got, "bootstrap") {
		t.Errorf("volumes %v lack auth or bootstrap", got)
	}
	if got := p.Services["proxy-eu-1"].Image; got != "warren:dev" {
		t.Errorf("image %q, want warren:dev without WARREN_IMAGE", got)
	}
	if got := loadCompose(t, "WARREN_IMAGE=registry.example.com/warren:1").Services["proxy-us-2"].Image; got != "registry.example.com/warren:1" {
		t.Errorf("image %q with WARREN_IMAGE set, want it", got)
	}

	// One proxy per region publishes its user and HTTP ports, on loopback
	// only; nothing else is published.
	published := map[string][]string{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			published[name] = append(published[name], fmt.Sprintf("%s:%s->%d/%s", port.HostIP, port.Published, port.Target, port.Protocol))
		}
		slices.Sort(published[name])
	}
	want := map[string][]string{
		"proxy-eu-1": {"127.0.0.1:3023->3023/tcp", "127.0.0.1:3080->3080/tcp"},
		"proxy-us-1": {"127.0.0.1:4023->3023/tcp", "127.0.0.1:4080->3080/tcp"},
	}
	if !maps.EqualFunc(published, want, slices.Equal) {
		t.Errorf("published ports %v, want %v", published, want)
	}

	for _, name := range []string{"proxy-eu-1", "proxy-eu-2", "proxy-us-1", "proxy-us-2"} {
		s := p.Services[name]
		checkComposeProxy(t, p, s)
	}
	for _, name := range []string{"agent-eu", "agent-us"} {
		checkComposeAgent(t, p, p.Services[name])
	}
	for _, name := range []string{"agent-eu", "agent-us", "sshd-eu", "sshd-us"} {
		for _, v := range p.Services[name].Volumes {
			if v.Source == "auth" {
				t.Errorf("%s mounts the auth volume (the CA keys): only the proxies and init may", name)
			}
		}
	}
}

// hostFile is the file of the repository a service's bind mount at target
// comes from.
func hostFile(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			if v.Type != types.VolumeTypeBind || !v.ReadOnly {
				t.Errorf("%s: %s is a %s mount (read-only %v), want a read-only bind", s.Name, target, v.Type, v.ReadOnly)
			}
			return v.Source
		}
	}
	t.Fatalf("%s mounts nothing at %s", s.Name, target)
	return ""
}

func checkComposeProxy(t *testing.T, p *types.Project, s types.ServiceConfig) {
	cfg, err := proxy.LoadConfig(hostFile(t, s, "/etc/warren/proxy.yaml"))
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	if cfg, err = cfg.CheckAndSetDefaults(); err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	if cfg.ID != s.Name {
		t.Errorf("%s: id %q, want the service's name", s.Name, cfg.ID)
	}
	wan := s.Networks["wan"]
	if wan == nil || cfg.Gossip.Advertise != wan.Ipv4Address+":3020" || cfg.Peer.Advertise != wan.Ipv4Address+":3021" {
		t.Errorf("%s: gossip.advertise %s peer.advertise %s, want its wan address %+v", s.Name, cfg.Gossip.Advertise, cfg.Peer.Advertise, wan)
	}
	// Every other proxy is a seed, by its wan address.
	for _, o := range p.Services {
		if !strings.HasPrefix(o.Name, "proxy-") || o.Name == s.Name {
			continue
		}
		if seed := o.Networks["wan"].Ipv4Address + ":3020"; !slices.Contains(cfg.Gossip.Seeds, seed) {
			t.Errorf("%s: seeds %v lack %s (%s)", s.Name, cfg.Gossip.Seeds, seed, o.Name)
		}
	}
	if !strings.HasPrefix(s.Name, "proxy-"+cfg.Region+"-") || cfg.Gossip.Profile != "wan" {
		t.Errorf("%s: region %q profile %q, want its name's region and wan", s.Name, cfg.Region, cfg.Gossip.Profile)
	}
	var auth bool
	for _, v := range s.Volumes {
		if v.Source == "auth" && v.Target == cfg.AuthDir {
			auth = v.ReadOnly
		}
	}
	if !auth {
		t.Errorf("%s: auth_dir %s is not the auth volume, read-only", s.Name, cfg.AuthDir)
	}
	if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= cfg.Shutdown.Grace+7*time.Second {
		t.Errorf("%s: stop_grace_period %v, want more than hand-off 5 s + shutdown.grace %s + leave 2 s", s.Name, s.StopGracePeriod, cfg.Shutdown.Grace)
	}
	if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "/readyz") {
		t.Errorf("%s: healthcheck %+v, want GET /readyz", s.Name, s.HealthCheck)
	}
}

func checkComposeAgent(t *testing.T, p *types.Project, s types.ServiceConfig) {
	src := hostFile(t, s, "/etc/warren/agent.yaml")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// What the entrypoint does with the pin init wrote.
	entry := strings.Join(s.Entrypoint, " ")
	if !strings.Contains(entry, "@CA_PIN@") || !strings.Contains(entry, "/warren/bootstrap/ca_pin") {
		t.Fatalf("%s: entrypoint %q does not put the pin in place of @CA_PIN@", s.Name, entry)
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), "@CA_PIN@", "SHA256:abc")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	if cfg, err = cfg.CheckAndSetDefaults(); err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	for _, r := range cfg.Resources {
		host, _, _ := strings.Cut(r.Addr, ":")
		if _, ok := p.Services[host]; r.Kind == "tcp" && !ok {
			t.Errorf("%s: resource %s's address %s is no service of the project", s.Name, r.Name, r.Addr)
		}
	}
	for _, addr := range cfg.Proxies {
		host, _, _ := strings.Cut(addr, ":")
		if _, ok := p.Services[host]; !ok {
			t.Errorf("%s: proxy %s is no service of the project", s.Name, addr)
		}
	}
	if !strings.HasPrefix(cfg.JoinTokenFile, "/warren/bootstrap/") {
		t.Errorf("%s: join_token_file %s is not in the bootstrap volume init writes", s.Name, cfg.JoinTokenFile)
	}
}

// buildWarren builds this repository's warren (in its own module, as
// `make build` does) into a directory of its own and returns that
// directory, for a PATH.
func buildWarren(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "warren"), "./cmd/warren")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build warren: %v\n%s", err, out)
	}
	return dir
}

// TestComposeInit runs the init step's script (compose/init.sh) with this
// repository's warren, as the init container does, on directories in
// place of its volumes; then again, as a second `docker compose up` does.
// What it leaves must be what the others read: the pin of the identity
// the proxies load, a join token of it, the user CA, an admin user.
func TestComposeInit(t *testing.T) {
	bin := buildWarren(t)
	root := t.TempDir()
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}
	dirs := map[string]string{}
	for _, v := range []string{"AUTH", "BOOTSTRAP", "USERCA", "USERS"} {
		dirs[v] = filepath.Join(root, strings.ToLower(v))
		env = append(env, v+"="+dirs[v])
		if v != "AUTH" && v != "USERS" { // warren init and user add make theirs
			if err := os.Mkdir(dirs[v], 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	script, err := filepath.Abs(filepath.Join(composeDir, "init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	run := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("init.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	first := run()
	a, err := pki.Load(dirs["AUTH"])
	if err != nil {
		t.Fatalf("the proxies could not load what init.sh made: %v", err)
	}
	pin := pki.Fingerprint(a.HostCA.PublicKey())
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read(filepath.Join(dirs["BOOTSTRAP"], "ca_pin")); got != pin {
		t.Errorf("bootstrap/ca_pin %q, want the host CA's pin %q", got, pin)
	}
	tok := read(filepath.Join(dirs["BOOTSTRAP"], "join_token"))
	if !a.CheckJoinToken(tok) {
		t.Errorf("bootstrap/join_token %q is not a join token of the identity", tok)
	}
	if fi, err := os.Stat(filepath.Join(dirs["BOOTSTRAP"], "join_token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap/join_token: %v, mode %v; the agent wants 0600", err, fi.Mode())
	}
	if read(filepath.Join(dirs["USERCA"], "user_ca.pub")) != read(filepath.Join(dirs["AUTH"], pki.FileUserCAPub)) {
		t.Error("userca/user_ca.pub is not the identity's user CA")
	}
	if _, err := os.Stat(filepath.Join(dirs["USERS"], "admin-cert.pub")); err != nil {
		t.Errorf("no admin certificate: %v", err)
	}
	second := run()
	if first != second || !strings.Contains(second, pin) {
		t.Errorf("a second run printed %q after %q: it must keep the identity", second, first)
	}
	if b, err := pki.Load(dirs["AUTH"]); err != nil || pki.Fingerprint(b.HostCA.PublicKey()) != pin {
		t.Errorf("a second run changed the identity: %v", err)
	}
}
