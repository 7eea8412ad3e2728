package bench

import (
	"testing"
)

// TestWANLoadTiny: the far rows of issue 13 on the emulated WAN, every
// figure measured, the uploads under way while the loaded rows were
// taken. Whether the goals are met is reported, never asserted: it
// depends on the machine. It needs root and network namespaces: it
// skips without them unless CI says it must run (WARREN_REQUIRE_NETNS=1),
// and then it fails.
func TestWANLoadTiny(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	needNetns(t)
	needSshd(t)
	rep := runTiny(t, "wan-load")
	keys := tableNamed(t, rep, "wan-load-keystrokes")
	// The network, then Warren and the bastion, each idle and loaded.
	if len(keys.Rows) != 5 {
		t.Fatalf("%d keystroke rows, want 5", len(keys.Rows))
	}
	measured(t, keys, 2)
	for i := range keys.Rows {
		col := rowOf(t, keys, i)
		if loaded := col("load") != "idle"; loaded == (col("upload meanwhile") == "none") {
			t.Errorf("%s, %s: upload meanwhile %q", col("route"), col("load"), col("upload meanwhile"))
		}
	}
	down := tableNamed(t, rep, "wan-load-download")
	if len(down.Rows) != 3 {
		t.Fatalf("%d download rows, want 3 (plain TCP, Warren, the bastion)", len(down.Rows))
	}
	measured(t, down, 2)
	if len(rep.Plots) != 3 {
		t.Errorf("%d plots, want 3", len(rep.Plots))
	}
}

// TestWANLoadFlags: bad settings get one clear error before anything
// starts.
func TestWANLoadFlags(t *testing.T) {
	flagErrors(t, "wan-load", wanLoadFlags, []flagCase{
		{[]string{"--round-trips", "0"}, "must be at least 1"},
		{[]string{"--rate-mbit", "0"}, "must be at least 1"},
		{[]string{"--queue-kib", "8"}, "--queue-kib at least 64"},
	})
}
