package bench

import (
	"context"
	"flag"
	"math"
	"os"
	"strings"
	"testing"
)

// needSshd skips a test when the stock sshd is not installed, unless CI
// says it must be (.ci/run installs it).
func needSshd(t *testing.T) {
	t.Helper()
	if _, err := SshdPath(); err != nil {
		if os.Getenv("WARREN_BENCH_REQUIRE_SSHD") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// needNetns skips a test of the emulated WAN when this process is not
// root (it makes network namespaces and TUN devices), unless CI says it
// must run (WARREN_REQUIRE_NETNS=1): then the test goes on, and fails
// where the emulator cannot start.
func needNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("WARREN_REQUIRE_NETNS") == "" {
		t.Skip("the emulated WAN needs root (network namespaces and TUN devices)")
	}
}

func TestPathTiny(t *testing.T) {
	needSshd(t)
	rep := runTiny(t, "path")
	// Seven routes, each measured: no empty figure.
	if rows := rep.Tables[0].Rows; len(rows) != 7 {
		t.Fatalf("%d routes, want 7", len(rows))
	}
	measured(t, rep.Tables[0], 2)
	if len(rep.Plots) != 3 {
		t.Errorf("%d plots, want 3", len(rep.Plots))
	}
}

func TestInteractiveTiny(t *testing.T) {
	needSshd(t)
	rep := runTiny(t, "interactive-under-load")
	// The anchor, Warren's four routes, two with the upload on another
	// tunnel, and the anchor and Warren's two tcp-resource routes under
	// several uploads.
	rows := rep.Tables[0].Rows
	if len(rows) != 10 {
		t.Fatalf("%d routes, want 10", len(rows))
	}
	measured(t, rep.Tables[0], 3)
	for _, row := range rows[7:] {
		if j := row[len(row)-1]; j == "—" || j == "" {
			t.Errorf("%s (%s): Jain's index %q, want a figure", row[0], row[2], j)
		}
	}
}

func TestJainIndex(t *testing.T) {
	for _, tc := range []struct {
		shares []int64
		want   float64
	}{
		{[]int64{5, 5, 5, 5}, 1},
		{[]int64{8, 0, 0, 0}, 0.25},
		{[]int64{3, 1}, 0.8}, // 16 / (2·10)
		{[]int64{0, 0}, 0},
	} {
		if got := jainIndex(tc.shares); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("jainIndex(%v) = %v, want %v", tc.shares, got, tc.want)
		}
	}
}

func TestSetupRateTiny(t *testing.T) {
	needSshd(t)
	rep := runTiny(t, "setup-rate")
	for _, row := range rep.Tables[0].Rows {
		// Every session of the tiny run works: no agent is lost here.
		if row[1] != "200" || row[2] != "0" {
			t.Errorf("%s: %s sessions, %s failed; want 200 and 0", row[0], row[1], row[2])
		}
	}
}

// TestWANTiny: the emulated WAN's honesty table, one row per pair of
// regions, every figure measured. It needs root and network namespaces:
// it skips without them unless CI says it must run.
func TestWANTiny(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	needNetns(t)
	rep := runTiny(t, "wan")
	if rows := rep.Tables[0].Rows; len(rows) != 9 {
		t.Fatalf("%d pairs, want 9 (3 regions)", len(rows))
	}
	measured(t, rep.Tables[0], 2)
}

// measured fails the test for every empty figure in the columns of tab
// from the first on.
func measured(t *testing.T, tab Table, first int) {
	t.Helper()
	for _, row := range tab.Rows {
		for _, cell := range row[first:] {
			if cell == "-" || strings.HasPrefix(cell, "0 ") || strings.HasPrefix(cell, "0.00 ") {
				t.Errorf("%v: empty figure %q", row[:first], cell)
			}
		}
	}
}

// TestRegionsTiny: two regions of the emulated WAN, every layout from
// each region's user to each region's node, every figure measured. It
// needs root and network namespaces: it skips without them unless CI says
// it must run (WARREN_REQUIRE_NETNS=1), and then it fails.
func TestRegionsTiny(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	needNetns(t)
	needSshd(t)
	rep := runTiny(t, "regions")
	// 2 × 2 pairs, five layouts each.
	if rows := rep.Tables[0].Rows; len(rows) != 20 {
		t.Fatalf("%d rows, want 20 (2 × 2 pairs × 5 layouts)", len(rows))
	}
	measured(t, rep.Tables[0], 2)
	if rows := rep.Tables[1].Rows; len(rows) != 4 {
		t.Fatalf("%d goal rows, want 4", len(rows))
	}
	if len(rep.Plots) != 3 {
		t.Errorf("%d plots, want 3", len(rep.Plots))
	}
}

// TestRegionsFlags: bad settings get one clear error before anything
// starts.
func TestRegionsFlags(t *testing.T) {
	flagErrors(t, "regions", regionsFlags, []flagCase{
		{[]string{"--before", "mars"}, `--before "mars" is not one of the regions`},
		{[]string{"--round-trips", "0"}, "must be at least 1"},
		{[]string{"--pace", "-1s"}, "--pace must not be negative"},
	})
}

// flagCase is a scenario's flags and the error they must get.
type flagCase struct {
	args []string
	want string
}

// flagErrors checks that each case's flags get an error with its want
// from the scenario's run function (of its tiny configuration), which
// must come before anything starts: the Env is empty.
func flagErrors(t *testing.T, name string, flags func(*flag.FlagSet, bool) func(context.Context, Env) (Report, error), cases []flagCase) {
	t.Helper()
	for _, tc := range cases {
		fs := flagSet(name)
		run := flags(fs, true)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := run(context.Background(), Env{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
