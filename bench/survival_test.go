package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSurvivalTiny runs the survival scenario's tiny configuration and
// checks what must hold whatever the machine's speed: every case ran with
// sessions under way at each kill, every transfer that came back whole
// matched its hash, and in each Warren case at least one session resumed;
// the rolling restart ran (checkRollingTiny). How many survived and how
// long they stalled are reported, never asserted.
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
	checkRollingTiny(t, rep)
}

// checkRollingTiny checks the mechanism of the rolling restart, whatever
// the machine's speed: it ran, every proxy was restarted and came back
// ready, and new sessions ran during it. How many failed or broke is
// reported, never asserted.
func checkRollingTiny(t *testing.T, rep Report) {
	t.Helper()
	tables := map[string]*Table{}
	for i := range rep.Tables {
		tables[rep.Tables[i].Name] = &rep.Tables[i]
	}
	restarts, summary := tables["survival-rolling-restarts"], tables["survival-rolling"]
	if restarts == nil || summary == nil {
		t.Fatal("the rolling restart did not run: no survival-rolling tables")
	}
	col := func(tb *Table, name string) int {
		i := slices.Index(tb.Header, name)
		if i < 0 {
			t.Fatalf("%s: no column %q", tb.Name, name)
		}
		return i
	}
	var restarted []string
	for _, row := range restarts.Rows {
		id := row[col(restarts, "restarted")]
		restarted = append(restarted, id)
		if back := row[col(restarts, "back")]; !strings.HasPrefix(back, "yes") {
			t.Errorf("%s did not come back: %s", id, back)
		}
	}
	if want := []string{"proxy-1", "proxy-2", "proxy-3"}; !slices.Equal(restarted, want) {
		t.Errorf("restarted %v, want %v", restarted, want)
	}
	for _, row := range summary.Rows {
		var total, failed int
		if _, err := fmt.Sscanf(row[col(summary, "new sessions (total / failed)")], "%d / %d", &total, &failed); err != nil {
			t.Fatalf("new sessions %q: %v", row[col(summary, "new sessions (total / failed)")], err)
		}
		if total == 0 {
			t.Errorf("%s: no new session ran during the rolling restart", row[0])
		}
		t.Logf("rolling restart %s: %d new sessions, %d failed; long sessions entered elsewhere survived: interactive %s, transfers %s",
			row[0], total, failed, row[col(summary, "long sessions entered elsewhere: interactive survived")], row[col(summary, "transfers survived")])
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
		{[]string{"--rolling-reps", "-1"}, "--rolling-reps must be 0 to 20"},
		{[]string{"--new-clients", "0"}, "--new-clients must be 1 to 32"},
		{[]string{"--new-every", "1ms"}, "--new-every must be between 10ms and 10s"},
	})
}
