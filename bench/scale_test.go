package bench

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScaleTiny runs the scale scenario's tiny configuration (60 agents
// in two fleets and a probe fleet, on 3 proxies) and checks that every
// agent connected and every figure was measured. It asserts no timing.
func TestScaleTiny(t *testing.T) {
	rep := runTiny(t, "scale")
	want := TinyScaleConfig().Agents
	sum := tableNamed(t, rep, "scale")
	if len(sum.Rows) != len(want) {
		t.Fatalf("summary has %d rows, want one per agent count %v", len(sum.Rows), want)
	}
	for i, n := range want {
		row := rowOf(t, sum, i)
		if got := row("agents"); got != strconv.Itoa(n) {
			t.Errorf("row %d: agents %q, want %d", i, got, n)
		}
		if got := row("tunnels up"); got != strconv.Itoa(n) {
			t.Errorf("%d agents: tunnels up %q, want %d", n, got, n)
		}
		if got := row("failed starts"); got != "0" {
			t.Errorf("%d agents: failed starts %q, want 0", n, got)
		}
		total := 0
		for _, f := range strings.Split(row("per proxy"), " / ") {
			c, err := strconv.Atoi(f)
			if err != nil || c < 1 {
				t.Errorf("%d agents: per proxy %q: want a positive count for each proxy", n, row("per proxy"))
			}
			total += c
		}
		if total != n {
			t.Errorf("%d agents: per proxy %q sums to %d", n, row("per proxy"), total)
		}
		for _, col := range []string{"connect all", "routes on every proxy", "route up p50 / p99", "route down p50 / p99", "proxy RSS per tunnel", "proxy CPU"} {
			if v := row(col); v == "-" || strings.HasPrefix(v, "did not") {
				t.Errorf("%d agents: %s not measured: %q", n, col, v)
			}
		}
	}
	detail := tableNamed(t, rep, "scale-proxies")
	if len(detail.Rows) != 3*len(want) {
		t.Errorf("per-proxy table has %d rows, want 3 per agent count", len(detail.Rows))
	}
}

// TestScaleReport checks the tables and plots made of given figures,
// including a count that did not hold.
func TestScaleReport(t *testing.T) {
	runs := []ScaleRun{
		{
			Agents: 300, Connected: 300, Held: true, ConnectAll: 3 * time.Second, RoutesAll: 40 * time.Millisecond,
			RouteUp: Durations{10 * time.Millisecond, 30 * time.Millisecond}, RouteDown: Durations{20 * time.Millisecond},
			PollEvery: 12 * time.Millisecond, FleetCPU: 20, FleetRSS: 100 << 20,
			Proxies: []ScaleProxy{
				{ID: "proxy-1", Tunnels: 100, BaseRSS: 40 << 20, RSS: 40<<20 + 100*50<<10, PeakRSS: 50 << 20, CPU: 3},
				{ID: "proxy-2", Tunnels: 100, BaseRSS: 40 << 20, RSS: 40<<20 + 100*60<<10, PeakRSS: 50 << 20, CPU: 4},
				{ID: "proxy-3", Tunnels: 100, BaseRSS: 40 << 20, RSS: 40<<20 + 100*55<<10, PeakRSS: 50 << 20, CPU: 5},
			},
		},
		{Agents: 900, Connected: 700, Why: "700 of 900 tunnels up after 3m0s"},
	}
	rep := scaleReport(DefaultScaleConfig(), runs)
	sum := tableNamed(t, rep, "scale")
	if len(sum.Rows) != 2 {
		t.Fatalf("got %d rows, want 2", len(sum.Rows))
	}
	held, short := rowOf(t, sum, 0), rowOf(t, sum, 1)
	for col, want := range map[string]string{
		"per proxy": "100 / 100 / 100", "connect all": "3.0 s", "routes on every proxy": "+40.0 ms",
		"proxy RSS per tunnel": "max 60.0 KiB", "proxy CPU": "3.0 – 5.0 %", "route up p50 / p99": "10.0 ms / 30.0 ms",
	} {
		if got := held(col); got != want {
			t.Errorf("held row, %s: got %q, want %q", col, got, want)
		}
	}
	if got := short("connect all"); !strings.Contains(got, "700 of 900") {
		t.Errorf("short row, connect all: got %q, want the reason", got)
	}
	if got := short("proxy RSS"); got != "-" {
		t.Errorf("short row, proxy RSS: got %q, want -", got)
	}
	for _, tb := range rep.Tables {
		for _, r := range tb.Rows {
			if len(r) != len(tb.Header) {
				t.Errorf("table %s: row %v does not fit header %v", tb.Name, r, tb.Header)
			}
		}
	}
	var names []string
	for _, p := range rep.Plots {
		names = append(names, p.Name)
		if err := p.Render(io.Discard); err != nil {
			t.Errorf("plot %s: %v", p.Name, err)
		}
	}
	if !slices.Equal(names, []string{"scale-rss-per-tunnel", "scale-connect", "scale-route-convergence"}) {
		t.Errorf("plots %v", names)
	}
}

func tableNamed(t *testing.T, rep Report, name string) Table {
	t.Helper()
	for _, tb := range rep.Tables {
		if tb.Name == name {
			return tb
		}
	}
	t.Fatalf("no table %q in the report", name)
	return Table{}
}

// rowOf returns a lookup of row i's cells by column name.
func rowOf(t *testing.T, tb Table, i int) func(col string) string {
	t.Helper()
	return func(col string) string {
		t.Helper()
		j := slices.Index(tb.Header, col)
		if j < 0 {
			t.Fatalf("table %s has no column %q (columns %v)", tb.Name, col, tb.Header)
		}
		return tb.Rows[i][j]
	}
}
