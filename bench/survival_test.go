package bench

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// TestSurvivalTiny runs the survival scenario's tiny configuration and
// checks what must hold whatever the machine's speed: every case ran with
// sessions under way at each kill, every transfer that came back whole
// matched its hash, and in each Warren case at least one session resumed.
// How many survived and how long they stalled are reported, never
// asserted.
func TestSurvivalTiny(t *testing.T) {
	needSshd(t) // the ssh -J b1,b2 anchor
	rep := runTiny(t, "survival")
	var runs *Table
	for i := range rep.Tables {
		if rep.Tables[i].Name == "survival-runs" {
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
	fraction := func(row []string, name string) (int, int) {
		var a, b int
		if _, err := fmt.Sscanf(row[col[name]], "%d/%d", &a, &b); err != nil {
			t.Fatalf("%s: %q is not a/b", name, row[col[name]])
		}
		return a, b
	}
	seen := map[string]bool{}
	resumed := map[string]int{}
	for _, row := range runs.Rows {
		kill := row[col["case"]]
		seen[kill] = true
		if _, under := fraction(row, "interactive survived"); under == 0 {
			t.Errorf("%s: no interactive session under way at the kill", kill)
		}
		if matched, done := fraction(row, "hashes matched"); matched != done {
			t.Errorf("%s: %d of %d transfers that came back whole matched their hash", kill, matched, done)
		}
		if kill != survAnchor.key() {
			n, err := strconv.Atoi(row[col["resumes logged"]])
			if err != nil {
				t.Fatalf("%s: resumes logged %q", kill, row[col["resumes logged"]])
			}
			c := kill
			if strings.HasPrefix(kill, "both") {
				c = "both"
			}
			resumed[c] += n
		}
	}
	for _, kill := range []string{"middle", "both-1", "both-2", "anchor"} {
		if !seen[kill] {
			t.Errorf("kill %s did not run", kill)
		}
	}
	for _, c := range []string{"middle", "both"} {
		if resumed[c] == 0 {
			t.Errorf("case %s: no session resumed", c)
		}
	}
}

// TestSurvivalFlags: bad settings get one clear error before anything
// starts.
func TestSurvivalFlags(t *testing.T) {
	flagErrors(t, "survival", survivalFlags, []flagCase{
		{[]string{"--interactive", "0"}, "--interactive must be 1 to 500"},
		{[]string{"--transfer-rate", "0"}, "--transfer-rate must be above 0"},
		{[]string{"--window", "10ms"}, "--window and --drain at least 1s"},
		{[]string{"--gossip", "fast"}, "--gossip"},
		{[]string{"--gap", "-1s"}, "--gap must not be negative"},
	})
}
