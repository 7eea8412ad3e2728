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
	bin, err := harness.BuildWarren(raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrenBin = bin
	code := m.Run()
	os.RemoveAll(filepath.Dir(bin))
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
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
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
			want := c.Net.Namespace(a.Host) + " " + c.Net.Addr(UserHost(from)).String()
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
		{func(s *Spec) { s.Queue = -1 }, "Queue"},
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

// TestTopologyCaps: a rate cap and its queue apply to every link between
// two regions, given or not, and never inside a region.
func TestTopologyCaps(t *testing.T) {
	s := threeRegions()
	s.Rate, s.Queue = 25e6, 5<<20
	delete(s.Delays, [2]string{"us", "ap"})
	topo := s.topology()
	for pair, l := range topo.Between {
		if l.Rate != s.Rate || l.Queue != s.Queue {
			t.Errorf("%v: rate %d, queue %d; want %d and %d", pair, l.Rate, l.Queue, s.Rate, s.Queue)
		}
	}
	if topo.Default.Rate != s.Rate || topo.Default.Queue != s.Queue {
		t.Errorf("a pair without a delay: rate %d, queue %d; want %d and %d", topo.Default.Rate, topo.Default.Queue, s.Rate, s.Queue)
	}
	if topo.Inside.Rate != 0 {
		t.Errorf("inside a region: rate %d, want no cap", topo.Inside.Rate)
	}
}

// TestRegionLostAndBack: with every proxy of eu killed (SIGKILL), users
// of the other regions still reach every node, eu's too: its agent, whose
// seeds list the other regions' proxies after its own, re-homes there.
// eu's proxies, started again on their addresses, rejoin, and eu's users
// reach every node again.
func TestRegionLostAndBack(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	spec := threeRegions()
	// Agents probe every second here (30 s by default), so that they go
	// home within seconds of their region's return (settle 1 s, dwell 3 s).
	spec.AgentYAML = "probe_interval: 1s\n"
	c := start(t, ctx, spec)
	// Each agent keeps its two tunnels in its own region.
	tunnels := func(what string, want map[string]int) time.Duration {
		return waitTunnels(t, ctx, c, what, func(by map[string]int) bool { return fmt.Sprint(by) == fmt.Sprint(want) })
	}
	tunnels("every agent at home", map[string]int{"us": 2, "eu": 2, "ap": 2})
	reaches := func(from, resource string) func() (bool, error) {
		return func() (bool, error) {
			sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			out, _ := c.SSH(sctx, from, resource, "echo ok").Output()
			return string(out) == "ok\n", nil
		}
	}
	c.KillRegion("eu")
	killed := time.Now()
	// eu's agent re-homes to the nearest other region: us, 40 ms away
	// (ap is 90).
	t.Logf("eu's agent re-homed to us %s after its region's proxies died",
		tunnels("eu's agent in us", map[string]int{"us": 4, "ap": 2}).Round(time.Millisecond))
	for _, from := range []string{"us", "ap"} {
		for _, res := range c.Resources() {
			if err := harness.Until(ctx, 60*time.Second, 200*time.Millisecond, res+" from "+from+" without eu's proxies", reaches(from, res)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("eu's proxies killed: every node reachable from us and ap %s later", time.Since(killed).Round(time.Millisecond))

	restart := time.Now()
	if err := c.StartRegion(ctx, "eu"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitMembers(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("eu's agent home again %s after its region rejoined",
		tunnels("eu's agent back home", map[string]int{"us": 2, "eu": 2, "ap": 2}).Round(time.Millisecond))
	for _, res := range c.Resources() {
		if err := harness.Until(ctx, 60*time.Second, 200*time.Millisecond, res+" from eu after its proxies came back", reaches("eu", res)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("eu's proxies started again and rejoined in %s; every node reachable from eu %s after", back.Sub(restart).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
}

// waitTunnels waits until the agents' tunnels, counted by the region of
// the proxy holding them (as the first proxy of the first region sees the
// cluster), are as want says, and returns how long that took.
func waitTunnels(t *testing.T, ctx context.Context, c *Cluster, what string, want func(map[string]int) bool) time.Duration {
	t.Helper()
	began := time.Now()
	var last map[string]int
	err := harness.Until(ctx, 60*time.Second, 200*time.Millisecond, what, func() (bool, error) {
		st, err := c.H.Status(c.Proxies(c.Spec.Regions[0])[0].Proxy)
		if err != nil {
			return false, nil
		}
		last = map[string]int{}
		for _, m := range st {
			if m.State == "alive" {
				last[m.Region] += m.LocalAgents
			}
		}
		return want(last), nil
	})
	if err != nil {
		t.Fatalf("%v: tunnels by region %v", err, last)
	}
	return time.Since(began)
}

// TestAgentHomeUnderJitter: with one proxy per region, each agent's second
// tunnel goes to another region. us has two about as near (eu 40 ms one
// way, ap 42), under up to 5 ms of jitter on every path between regions,
// measured every 200 ms for half a minute: a choice by the latest round
// trip would flip between them; the agent's moves at most once. eu's and
// ap's agents put their second tunnel in us, far nearer than the other.
func TestAgentHomeUnderJitter(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	spec := threeRegions()
	spec.ProxiesPerRegion = 1
	spec.Delays[[2]string{"us", "ap"}] = 42 * time.Millisecond
	spec.Jitter = 5 * time.Millisecond
	spec.AgentYAML = "probe_interval: 200ms\n"
	c := start(t, ctx, spec)
	// us: its agent's first tunnel, and eu's and ap's second; eu and ap:
	// their agent's first, and us's second in one of them.
	settled := func(by map[string]int) bool { return by["us"] == 3 && by["eu"]+by["ap"] == 3 }
	waitTunnels(t, ctx, c, "each agent home, its second tunnel in a near other region", settled)
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
	}
	waitTunnels(t, ctx, c, "the same, half a minute later", settled)
	for _, a := range c.allAgents() {
		log, err := os.ReadFile(a.Proc.Log)
		if err != nil {
			t.Fatal(err)
		}
		moves := bytes.Count(log, []byte("tunnel moved to a nearer proxy"))
		t.Logf("%s moved a tunnel %d times", a.Config.Name, moves)
		if moves > 1 {
			t.Errorf("%s moved a tunnel %d times under jitter, want at most once:\n%s", a.Config.Name, moves, log)
		}
		if n := bytes.Count(log, []byte("tunnel down")); n > 0 {
			t.Errorf("%s lost a tunnel %d times with every proxy up:\n%s", a.Config.Name, n, log)
		}
	}
}
