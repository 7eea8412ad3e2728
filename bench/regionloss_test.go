package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRegionLossTiny runs the region-loss scenario's tiny configuration
// (network namespaces: as root; skipped elsewhere unless
// WARREN_REQUIRE_NETNS is set, as in CI) and checks what must hold
// whatever the machine's speed: every agent found a tunnel outside the
// lost region, and every one came home after it returned. The timings
// are reported, never asserted.
func TestRegionLossTiny(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	needNetns(t)
	rep := runTiny(t, "region-loss")
	steady := tableNamed(t, rep, "region-loss-steady")
	want := 3 * TinyRegionLossConfig().AgentsPerRegion / TinyRegionLossConfig().Resources
	for i := range steady.Rows {
		col := rowOf(t, steady, i)
		if got := col("healthy replicas per resource on its proxies (API)"); !strings.HasPrefix(got, fmt.Sprintf("%d–", want)) {
			t.Errorf("%s's proxies: healthy replicas per resource %q, want %d for every resource", col("fleet region"), got, want)
		}
	}
	rehome := tableNamed(t, rep, "region-loss-rehome")
	for i := range rehome.Rows {
		col := rowOf(t, rehome, i)
		step := col("step")
		if col("agents") == "0" || col("reached it") != col("agents") {
			t.Errorf("%s: %s of %s agents reached it", step, col("reached it"), col("agents"))
		}
		if strings.Contains(step, "tunnel elsewhere") && !strings.Contains(col("where"), "us") {
			t.Errorf("%s: went to %q, want us (the nearest region) among them", step, col("where"))
		}
	}
	sessions := tableNamed(t, rep, "region-loss-sessions")
	total := 0
	for i := range sessions.Rows {
		n, _ := strconv.Atoi(rowOf(t, sessions, i)("sessions"))
		total += n
	}
	if total == 0 {
		t.Error("no sessions ran during the region's loss")
	}
}

func TestSessionBuckets(t *testing.T) {
	s := time.Second
	got := sessionBuckets(3*s, 20*s)
	want := [][2]time.Duration{{-4 * s, -2 * s}, {-2 * s, 0}, {0, 2 * s}, {2 * s, 4 * s}, {4 * s, 6 * s}, {6 * s, 8 * s},
		{8 * s, 10 * s}, {10 * s, 12 * s}, {12 * s, 17 * s}, {17 * s, 22 * s}}
	if !slices.Equal(got, want) {
		t.Errorf("sessionBuckets(3s, 20s):\ngot  %v\nwant %v", got, want)
	}
}
