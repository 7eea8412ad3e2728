package usercmd

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/storage/recordings"
)

// recProxy is fakeProxy with recordings.
type recProxy struct {
	*fakeProxy
	list []recordings.Meta
	q    *clusterpb.RecordingQuery
}

func (r *recProxy) ClusterRecordings(q *clusterpb.RecordingQuery) ([]recordings.Meta, bool, []string) {
	r.q = q
	return r.list, false, []string{"(proxy p2: unreachable; recordings only it holds are missing)"}
}

func (r *recProxy) LocalRecordings(q *clusterpb.RecordingQuery) ([]recordings.Meta, bool, error) {
	r.q = q
	return r.list[:1], false, nil
}

func (r *recProxy) ReadRecording(id string, w io.Writer) error {
	_, err := io.WriteString(w, "cast of "+id)
	return err
}

func TestRecordingsCommand(t *testing.T) {
	f := &recProxy{fakeProxy: newFakeProxy(), list: []recordings.Meta{
		{ID: "aa11", User: "alice", Resource: "node1", Start: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Duration: 90 * time.Second, Size: 2048, Input: true},
		{ID: "bb22", User: "bob", Resource: "node2", Truncated: true},
	}}
	code, out, errOut := run(f, admin, "", "recordings", "ls", "--user", "alice", "--since", "2026-11-30")
	if code != 0 || !strings.Contains(out, "aa11") || !strings.Contains(out, "2.0 KiB") || !strings.Contains(out, "1m30s") || !strings.Contains(out, "input") || !strings.Contains(errOut, "proxy p2") {
		t.Errorf("recordings ls: exit %d\n%s\nstderr %q", code, out, errOut)
	}
	if f.q.User != "alice" || time.Unix(0, f.q.SinceUnixNano).UTC() != time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) {
		t.Errorf("query %+v", f.q)
	}
	if code, out, _ := run(f, admin, "", "recordings", "get", "aa11"); code != 0 || out != "cast of aa11" {
		t.Errorf("recordings get: exit %d, %q", code, out)
	}
	if code, _, errOut := run(f, bob, "", "recordings", "ls"); code != 1 || !strings.Contains(errOut, "recordings needs a role that allows it") {
		t.Errorf("bob lists recordings: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{
		{"recordings", "ls", "--since", "yesterday"},
		{"recordings", "ls", "--user", "a b"},
		{"recordings", "ls", "--limit", "0"},
		{"recordings", "get"},
		{"recordings", "play"},
	} {
		if code, _, errOut := run(f, admin, "", args...); code != 2 || !strings.HasPrefix(errOut, "warren: ") && !strings.Contains(errOut, "flag") {
			t.Errorf("%v: exit %d, %q; want a usage error", args, code, errOut)
		}
	}
	// A proxy without recordings says so.
	if code, _, errOut := run(newFakeProxy(), admin, "", "recordings", "ls"); code != 1 || !strings.Contains(errOut, "keeps no recordings") {
		t.Errorf("no recordings: exit %d, %q", code, errOut)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"2026-12-01":           time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		"2026-12-01T10:30":     time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC),
		"2026-12-01T10:30:00Z": time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC),
	} {
		if got, err := ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1h", "0s", "tomorrow"} {
		if _, err := ParseSince(in, now); err == nil {
			t.Errorf("ParseSince(%q) took it", in)
		}
	}
}
