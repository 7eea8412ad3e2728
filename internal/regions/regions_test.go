package regions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/wan"
)

// These tests run the real warren binary, built once for the package.
var warrenBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warren-bin")
	if err != nil {
		panic(err)
	}
	warrenBin = filepath.Join(dir, "warren")
	// The processes are built like the tests: with the race detector when
	// the tests run with it.
	args := []string{"build", "-o", warrenBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/warren-proxy/warren/cmd/warren")...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build warren:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start starts spec's cluster for a test, or skips when this machine
// cannot make network namespaces (with WARREN_REQUIRE_NETNS=1, as in CI,
// it fails instead). On failure the cleanup logs the tails of every
// process's log; it always leaves nothing running.
func start(t *testing.T, ctx context.Context, spec Spec) *Cluster {
	t.Helper()
	spec.Bin, spec.Dir = warrenBin, t.TempDir()
	began := time.Now()
	c, err := Start(ctx, spec)
	if err != nil {
		if os.Getenv("WARREN_REQUIRE_NETNS") == "" && wan.Unavailable(err) {
			t.Skipf("no network namespaces or TUN devices here (needs root): %v", err)
		}
		var logs []byte
		for _, f := range must(filepath.Glob(filepath.Join(spec.Dir, "*.log"))) {
			b, _ := os.ReadFile(f)
			logs = append(logs, fmt.Sprintf("=== %s, last 2000 bytes:\n%s\n", f, b[max(0, len(b)-2000):])...)
		}
		t.Fatalf("start: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", c.Logs(30))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("%d proxies and %d agents in %d regions up, every resource routable on every proxy, in %s",
		len(c.all()), len(c.allAgents()), len(spec.Regions), time.Since(began).Round(time.Millisecond))
	return c
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// threeRegions is the latency matrix of bench's WAN scenario.
func threeRegions() Spec {
	return Spec{
		Regions: []string{"us", "eu", "ap"}, ProxiesPerRegion: 2, AgentsPerRegion: 1,
		Delays: map[[2]string]time.Duration{
			{"us", "eu"}: 40 * time.Millisecond, {"us", "ap"}: 60 * time.Millisecond, {"eu", "ap"}: 90 * time.Millisecond,
		},
		Inside: 500 * time.Microsecond,
	}
}

// TestSSHAcrossRegions: stock ssh on each region's user host, entering a
// proxy of its own region, reaches the node of every region; the node
// that answers proves where it runs (its network namespace) and whom it
// serves (the user host's address, as the entry proxy saw it); an exit
// status crosses the longest path.
func TestSSHAcrossRegions(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	spec := threeRegions()
	c := start(t, ctx, spec)
	// Every agent keeps its two tunnels in its own region, one to each
	// zone: every proxy holds one.
	err := harness.Until(ctx, 20*time.Second, 100*time.Millisecond, "one agent tunnel on every proxy", func() (bool, error) {
		st, err := c.H.Status(c.Proxies("us")[0].Proxy)
		for _, m := range st {
			if m.LocalAgents != 1 {
				return false, nil
			}
		}
		return err == nil, nil
	})
	if err != nil {
		st, _ := c.H.Status(c.Proxies("us")[0].Proxy)
		t.Errorf("%v: %+v", err, st)
	}
	for _, r := range spec.Regions {
		p := c.Proxies(r)[0]
		st, err := c.H.Status(p.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		var rtts []string
		for _, m := range st {
			rtts = append(rtts, fmt.Sprintf("%s %.1fms", m.ID, m.RTTMillis))
		}
		t.Logf("peer-link RTTs seen by %s: %s", p.ID, strings.Join(rtts, ", "))
	}
	for _, from := range spec.Regions {
		for _, to := range spec.Regions {
			a := c.Agents(to)[0]
			want := c.Net.Namespace(a.Host) + " " + c.Net.Addr(userHost(from)).String()
			began := time.Now()
			cmd := c.SSH(ctx, from, a.Resource, `echo "$(ip netns identify) ${SSH_CONNECTION%% *}"`)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			took := time.Since(began)
			if got := strings.TrimSpace(string(out)); err != nil || got != want {
				t.Errorf("ssh from %s's user host to %s: got %q (%v; stderr %q), want %q", from, a.Resource, got, err, stderr.String(), want)
				continue
			}
			t.Logf("ssh %s → %s (one-way %s): %s", from, a.Resource, oneWay(spec, from, to), took.Round(time.Millisecond))
		}
	}
	err = c.SSH(ctx, "ap", c.Agents("eu")[0].Resource, "exit 3").Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("ssh ap → node-eu-1 'exit 3': got %v, want exit status 3", err)
	}
	t.Logf("packets dropped by the emulator: %v", c.Net.Dropped())
}

func oneWay(s Spec, a, b string) time.Duration {
	if a == b {
		return s.Inside
	}
	if d, ok := s.Delays[[2]string{a, b}]; ok {
		return d
	}
	return s.Delays[[2]string{b, a}]
}

func TestSpecIsChecked(t *testing.T) {
	good := threeRegions()
	good.Bin, good.Dir = "/bin/warren", "/tmp/x"
	if _, err := good.CheckAndSetDefaults(); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	for _, tc := range []struct {
		change func(*Spec)
		want   string
	}{
		{func(s *Spec) { s.Bin = "" }, "Bin"},
		{func(s *Spec) { s.Regions = nil }, "0 regions"},
		{func(s *Spec) { s.Regions = []string{"us", "US"} }, `"US"`},
		{func(s *Spec) { s.Regions = []string{"us", "us"} }, "twice"},
		{func(s *Spec) { s.ProxiesPerRegion = 10 }, "ProxiesPerRegion"},
		{func(s *Spec) { s.Delays = map[[2]string]time.Duration{{"us", "mars"}: time.Second} }, "us-mars"},
		{func(s *Spec) { s.Loss = 2 }, "Loss"},
		{func(s *Spec) { s.Gossip = "fast" }, "Gossip"},
	} {
		s := threeRegions()
		s.Bin, s.Dir = good.Bin, good.Dir
		tc.change(&s)
		if _, err := s.CheckAndSetDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}

// TestRegionLostAndBack: with every proxy of eu killed (SIGKILL), users
// of the other regions still reach every node, eu's too: its agent, whose
// seeds list the other regions' proxies after its own, re-homes there,
// to the nearest region (us: 40 ms one-way, ap 90). eu's proxies,
// started again on their addresses, rejoin, eu's users reach every node
// again, and eu's agent moves both its tunnels home.
func TestRegionLostAndBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	spec := threeRegions()
	// Probes every 2 s: an agent moves home once its region's proxies
	// have answered for a probe interval, checked every probe interval.
	spec.AgentYAML = "probe_interval: 2s\n"
	c := start(t, ctx, spec)
	reaches := func(from, resource string) func() (bool, error) {
		return func() (bool, error) {
			sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			out, _ := c.SSH(sctx, from, resource, "echo ok").Output()
			return string(out) == "ok\n", nil
		}
	}
	// tunnels counts, per region, the tunnels its running proxies hold.
	tunnels := func() map[string]int {
		n := map[string]int{}
		for _, r := range spec.Regions {
			for _, p := range c.Proxies(r) {
				if p.Proc == nil || p.Proc.Exited() {
					continue
				}
				st, err := c.H.Status(p.Proxy)
				if err != nil {
					return nil
				}
				for _, m := range st {
					if m.ID == p.ID {
						n[r] += m.LocalAgents
					}
				}
			}
		}
		return n
	}
	// Each region's agent holds 2 tunnels; want is where they all are.
	placed := func(want map[string]int) func() (bool, error) {
		return func() (bool, error) {
			got := tunnels()
			for _, r := range spec.Regions {
				if got[r] != want[r] {
					return false, nil
				}
			}
			return true, nil
		}
	}
	c.KillRegion("eu")
	killed := time.Now()
	for _, from := range []string{"us", "ap"} {
		for _, res := range c.Resources() {
			if err := harness.Until(ctx, 60*time.Second, 200*time.Millisecond, res+" from "+from+" without eu's proxies", reaches(from, res)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("eu's proxies killed: every node reachable from us and ap %s later", time.Since(killed).Round(time.Millisecond))
	if err := harness.Until(ctx, 30*time.Second, 100*time.Millisecond, "agent-eu-1's tunnels on us's proxies", placed(map[string]int{"us": 4, "ap": 2})); err != nil {
		t.Errorf("%v: tunnels per region %v", err, tunnels())
	}

	restart := time.Now()
	if err := c.StartRegion(ctx, "eu"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitMembers(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for _, res := range c.Resources() {
		if err := harness.Until(ctx, 60*time.Second, 200*time.Millisecond, res+" from eu after its proxies came back", reaches("eu", res)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("eu's proxies started again and rejoined in %s; every node reachable from eu %s after", back.Sub(restart).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	if err := harness.Until(ctx, 60*time.Second, 100*time.Millisecond, "agent-eu-1's tunnels home", placed(map[string]int{"us": 2, "eu": 2, "ap": 2})); err != nil {
		t.Fatalf("%v: tunnels per region %v", err, tunnels())
	}
	t.Logf("agent-eu-1 had both tunnels home %s after its region's proxies rejoined", time.Since(back).Round(time.Millisecond))
}
