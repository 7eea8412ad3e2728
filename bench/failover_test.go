package bench

import (
	"strconv"
	"testing"
)

// TestFailoverTiny runs the failover scenario's tiny configuration and
// checks what must hold whatever the machine's speed: every case ran
// under load, and the survivors converged on the new state within the
// window. The figures themselves are reported, never asserted.
func TestFailoverTiny(t *testing.T) {
	rep := runTiny(t, "failover")
	var runs *Table
	for i := range rep.Tables {
		if rep.Tables[i].Name == "failover-runs" {
			runs = &rep.Tables[i]
		}
	}
	if runs == nil {
		t.Fatal("no per-repetition table")
	}
	col := map[string]int{}
	for i, h := range runs.Header {
		col[h] = i
	}
	seen := map[string]bool{}
	for _, row := range runs.Rows {
		kind := row[col["case"]]
		seen[kind] = true
		if n, err := strconv.Atoi(row[col["new sessions"]]); err != nil || n == 0 {
			t.Errorf("%s: got %q new sessions in the window, want some", kind, row[col["new sessions"]])
		}
		if got := row[col["converged"]]; got == "-" {
			t.Errorf("%s: convergence was not observed within the window", kind)
		}
		if kind == faultKind(killTunnelProxy).key() {
			if got := row[col["agent-1 routed again"]]; got == "-" {
				t.Errorf("%s: agent-1 was not routed again within the window", kind)
			}
			if got := row[col["agent-1 moved to"]]; got != "proxy-2" && got != "proxy-3" {
				t.Errorf("%s: agent-1 moved to %q, want a surviving proxy", kind, got)
			}
		}
	}
	for k := faultKind(0); k < numFaultKinds; k++ {
		if !seen[k.key()] {
			t.Errorf("case %s did not run", k.key())
		}
	}
}
