package audit_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/warren-proxy/warren/storage/audit"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)

func open(t testing.TB, path string, opts audit.Options) *audit.Log {
	t.Helper()
	l, err := audit.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func openTemp(t testing.TB) *audit.Log {
	t.Helper()
	l := open(t, filepath.Join(t.TempDir(), "audit.db"), audit.Options{})
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
		checkNoBoltGoroutines(t)
	})
	return l
}

// checkNoBoltGoroutines fails t if a bbolt goroutine (a batch run) outlives
// Close.
func checkNoBoltGoroutines(t testing.TB) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "go.etcd.io/bbolt") {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting for one
	}
	t.Errorf("bbolt goroutines still running after Close:\n%s", stacks)
}

func appendAll(t *testing.T, l *audit.Log, evs ...audit.Event) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, ev := range evs {
		got, err := l.Append(ev)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		out = append(out, got)
	}
	return out
}

// query returns the events of q, failing t on an error or a skipped record.
func query(t *testing.T, l *audit.Log, q audit.Query) []audit.Event {
	t.Helper()
	res, err := l.Query(q)
	if err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	if res.Skipped > 0 {
		t.Fatalf("Query(%+v) skipped %d records: %q", q, res.Skipped, res.SkippedKeys)
	}
	return res.Events
}

func seqs(evs []audit.Event) []uint64 {
	out := []uint64{}
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

func TestAppendAssigns(t *testing.T) {
	now := t0.Add(time.Hour)
	l := open(t, filepath.Join(t.TempDir(), "audit.db"), audit.Options{Now: func() time.Time { return now }})
	defer l.Close()

	in := audit.Event{
		Seq: 99, Type: "session.end", SessionID: "s1", User: "alice", Login: "root",
		Resource: "db", AgentID: "agent-1", ProxyID: "proxy-1", ClientAddr: "10.0.0.1:5555",
		Path: "proxy-1>agent", BytesIn: 10, BytesOut: 20, Duration: 3 * time.Second,
		Outcome: "error", Error: "agent went away",
		Time: t0.In(time.FixedZone("X", -5*3600)),
	}
	got := appendAll(t, l, in, audit.Event{Type: "session.start"})

	want0 := in
	want0.Seq, want0.Time = 1, t0
	if !reflect.DeepEqual(got[0], want0) {
		t.Errorf("first Append:\ngot  %+v\nwant %+v", got[0], want0)
	}
	if got[1].Seq != 2 || !got[1].Time.Equal(now) {
		t.Errorf("second Append: got seq %d time %v, want seq 2 time %v", got[1].Seq, got[1].Time, now)
	}
	if stored := query(t, l, audit.Query{Order: audit.OldestFirst}); !reflect.DeepEqual(stored, []audit.Event{got[0], got[1]}) {
		t.Errorf("Query:\ngot  %+v\nwant %+v", stored, got)
	}
}

func TestQuery(t *testing.T) {
	l := openTemp(t)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	// Appended out of time order; seq follows append order, Query time order.
	appendAll(t, l,
		audit.Event{Time: at(2), Type: "session.start", SessionID: "s2", User: "bob", Resource: "web"},   // 1
		audit.Event{Time: at(0), Type: "session.start", SessionID: "s1", User: "alice", Resource: "db"},  // 2
		audit.Event{Time: at(5), Type: "session.end", SessionID: "s1", User: "alice", Resource: "db"},    // 3
		audit.Event{Time: at(5), Type: "session.end", SessionID: "s2", User: "bob", Resource: "web"},     // 4
		audit.Event{Time: at(3), Type: "session.refused", SessionID: "s3", User: "eve", Resource: "db"},  // 5
		audit.Event{Time: at(9), Type: "session.start", SessionID: "s4", User: "alice", Resource: "web"}, // 6
	)
	// want lists the matches in time order; NewestFirst must return them
	// reversed.
	tests := []struct {
		name string
		q    audit.Query
		want []uint64
	}{
		{"all", audit.Query{}, []uint64{2, 1, 5, 3, 4, 6}},
		{"since inclusive", audit.Query{Since: at(3)}, []uint64{5, 3, 4, 6}},
		{"until exclusive", audit.Query{Until: at(5)}, []uint64{2, 1, 5}},
		{"window", audit.Query{Since: at(1), Until: at(6)}, []uint64{1, 5, 3, 4}},
		{"empty window", audit.Query{Since: at(5), Until: at(5)}, []uint64{}},
		{"window with no events", audit.Query{Since: at(6), Until: at(8)}, []uint64{}},
		{"after last", audit.Query{Since: at(10)}, []uint64{}},
		{"before first", audit.Query{Until: at(0)}, []uint64{}},
		{"since before 1970", audit.Query{Since: time.Unix(-100, 0)}, []uint64{2, 1, 5, 3, 4, 6}},
		{"until before 1970", audit.Query{Until: time.Unix(-100, 0)}, []uint64{}},
		{"since after 2262", audit.Query{Since: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, []uint64{}},
		{"until after 2262", audit.Query{Until: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, []uint64{2, 1, 5, 3, 4, 6}},
		{"user", audit.Query{User: "alice"}, []uint64{2, 3, 6}},
		{"session", audit.Query{SessionID: "s2"}, []uint64{1, 4}},
		{"resource", audit.Query{Resource: "db"}, []uint64{2, 5, 3}},
		{"user and resource", audit.Query{User: "alice", Resource: "web"}, []uint64{6}},
		{"user in window", audit.Query{User: "alice", Since: at(1)}, []uint64{3, 6}},
		{"no match", audit.Query{User: "mallory"}, []uint64{}},
		{"limit equal to matches", audit.Query{Resource: "web", Limit: 3}, []uint64{1, 4, 6}},
	}
	for _, tt := range tests {
		for _, order := range []audit.Order{audit.OldestFirst, audit.NewestFirst} {
			want := slices.Clone(tt.want)
			name := tt.name + "/oldest"
			if order == audit.NewestFirst {
				slices.Reverse(want)
				name = tt.name + "/newest"
			}
			t.Run(name, func(t *testing.T) {
				q := tt.q
				q.Order = order
				res, err := l.Query(q)
				if err != nil {
					t.Fatal(err)
				}
				if got := seqs(res.Events); !reflect.DeepEqual(got, want) || res.Truncated || res.Skipped != 0 {
					t.Errorf("got seqs %v truncated %v skipped %d, want %v, not truncated, none skipped", got, res.Truncated, res.Skipped, want)
				}
			})
		}
	}
}

// TestQueryLimit checks that a limited query returns the newest (or oldest)
// matches and says that it left some out.
func TestQueryLimit(t *testing.T) {
	l := openTemp(t)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	// In time order: seqs 2, 1, 5, 3, 4, 6 (3 and 4 at the same time).
	appendAll(t, l,
		audit.Event{Time: at(2), Type: "session.start", SessionID: "s2", User: "bob", Resource: "web"},   // 1
		audit.Event{Time: at(0), Type: "session.start", SessionID: "s1", User: "alice", Resource: "db"},  // 2
		audit.Event{Time: at(5), Type: "session.end", SessionID: "s1", User: "alice", Resource: "db"},    // 3
		audit.Event{Time: at(5), Type: "session.end", SessionID: "s2", User: "bob", Resource: "web"},     // 4
		audit.Event{Time: at(3), Type: "session.refused", SessionID: "s3", User: "eve", Resource: "db"},  // 5
		audit.Event{Time: at(9), Type: "session.start", SessionID: "s4", User: "alice", Resource: "web"}, // 6
	)
	tests := []struct {
		name      string
		q         audit.Query
		want      []uint64
		truncated bool
	}{
		{"newest is the default", audit.Query{Limit: 2}, []uint64{6, 4}, true},
		{"oldest", audit.Query{Limit: 2, Order: audit.OldestFirst}, []uint64{2, 1}, true},
		{"newest, ties reversed", audit.Query{Limit: 3}, []uint64{6, 4, 3}, true},
		{"all fit", audit.Query{Limit: 6}, []uint64{6, 4, 3, 5, 1, 2}, false},
		{"one left out", audit.Query{Limit: 5}, []uint64{6, 4, 3, 5, 1}, true},
		{"after filter", audit.Query{Resource: "web", Limit: 2}, []uint64{6, 4}, true},
		{"after filter, oldest", audit.Query{Resource: "web", Limit: 2, Order: audit.OldestFirst}, []uint64{1, 4}, true},
		{"filter, all fit", audit.Query{Resource: "web", Limit: 3}, []uint64{6, 4, 1}, false},
		{"window", audit.Query{Since: at(1), Until: at(6), Limit: 1}, []uint64{4}, true},
		{"window, oldest", audit.Query{Since: at(1), Until: at(6), Limit: 1, Order: audit.OldestFirst}, []uint64{1}, true},
		{"events past the window do not count", audit.Query{User: "alice", Until: at(6), Limit: 2}, []uint64{3, 2}, false},
		{"events before the window do not count", audit.Query{User: "alice", Since: at(1), Limit: 2, Order: audit.OldestFirst}, []uint64{3, 6}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := l.Query(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(res.Events); !reflect.DeepEqual(got, tt.want) || res.Truncated != tt.truncated {
				t.Errorf("got seqs %v truncated %v, want %v truncated %v", got, res.Truncated, tt.want, tt.truncated)
			}
		})
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := open(t, path, audit.Options{})
	want := appendAll(t, l,
		audit.Event{Time: t0, Type: "session.start", SessionID: "s1", User: "alice", Resource: "db", Outcome: "started"},
		audit.Event{Time: t0.Add(time.Second), Type: "session.end", SessionID: "s1", User: "alice", Resource: "db", Outcome: "ok", BytesIn: 1 << 40},
	)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	l = open(t, path, audit.Options{})
	defer l.Close()
	if got := query(t, l, audit.Query{Order: audit.OldestFirst}); !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen:\ngot  %+v\nwant %+v", got, want)
	}
	// Seq keeps counting where it stopped.
	next := appendAll(t, l, audit.Event{Time: t0, Type: "session.refused"})
	if next[0].Seq != 3 {
		t.Errorf("got seq %d after reopen, want 3", next[0].Seq)
	}
}

// TestConcurrentAppend appends from many goroutines at once; run it with
// -race. Every event must be stored once, under a Seq of its own.
func TestConcurrentAppend(t *testing.T) {
	l := openTemp(t)
	const writers, each = 20, 60
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		returned = map[uint64]string{} // seq -> session, as Append returned them
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				sid := fmt.Sprintf("w%d-%d", w, i)
				ev, err := l.Append(audit.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: "session.start", SessionID: sid})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := returned[ev.Seq]; dup {
					t.Errorf("seq %d returned for both %s and %s", ev.Seq, prev, sid)
				}
				returned[ev.Seq] = sid
				mu.Unlock()
			}
		})
	}
	// Queries run alongside the appends.
	done := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := l.Query(audit.Query{User: "nobody"}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	close(done)
	readers.Wait()

	stored := query(t, l, audit.Query{Limit: 2 * writers * each})
	if len(stored) != writers*each {
		t.Fatalf("got %d events stored, want %d", len(stored), writers*each)
	}
	for _, ev := range stored {
		if sid, ok := returned[ev.Seq]; !ok || sid != ev.SessionID {
			t.Errorf("stored seq %d session %s, but Append returned it for %q", ev.Seq, ev.SessionID, sid)
		}
	}
	if got := len(query(t, l, audit.Query{})); got != audit.DefaultLimit {
		t.Errorf("Query without Limit: got %d events, want %d", got, audit.DefaultLimit)
	}
}

func TestOpenInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := open(t, path, audit.Options{})
	start := time.Now()
	l2, err := audit.Open(path, audit.Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		l2.Close()
		t.Fatal("second Open succeeded, want ErrInUse")
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("second Open took %v, want it to give up after its 50ms timeout", elapsed)
	}
	want := "audit log " + path + " is in use by another process"
	if !errors.Is(err, audit.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Errorf("got error %q, want ErrInUse containing %q", err, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, path, audit.Options{Timeout: 50 * time.Millisecond}).Close()
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "sub", "fresh.db")
	open(t, fresh, audit.Options{}).Close()

	loose := filepath.Join(dir, "loose.db")
	open(t, loose, audit.Options{}).Close()
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, loose, audit.Options{}).Close()

	for _, path := range []string{fresh, loose} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: got mode %v, want 0600", filepath.Base(path), got)
		}
	}
	fi, err := os.Stat(filepath.Dir(fresh))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("created directory: got mode %v, want 0700", got)
	}
}

func TestInvalidInput(t *testing.T) {
	l := openTemp(t)
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"open empty path", func() error { _, err := audit.Open("", audit.Options{}); return err }, "path is empty"},
		{"open negative timeout", func() error {
			_, err := audit.Open(filepath.Join(t.TempDir(), "a.db"), audit.Options{Timeout: -time.Second})
			return err
		}, "timeout -1s is negative"},
		{"append no type", func() error { _, err := l.Append(audit.Event{User: "alice"}); return err }, "type is empty"},
		{"append before 1970", func() error {
			_, err := l.Append(audit.Event{Type: "session.start", Time: time.Unix(-1, 0)})
			return err
		}, "outside 1970 to 2262"},
		{"append after 2262", func() error {
			_, err := l.Append(audit.Event{Type: "session.start", Time: time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC)})
			return err
		}, "outside 1970 to 2262"},
		{"query negative limit", func() error { _, err := l.Query(audit.Query{Limit: -1}); return err }, "limit -1 is negative"},
		{"query unknown order", func() error { _, err := l.Query(audit.Query{Order: 7}); return err }, "order 7 is unknown"},
		{"query until before since", func() error {
			_, err := l.Query(audit.Query{Since: t0, Until: t0.Add(-time.Second)})
			return err
		}, "is before since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if got := query(t, l, audit.Query{}); len(got) != 0 {
		t.Errorf("got %d events after rejected appends, want 0", len(got))
	}
}

func TestClosed(t *testing.T) {
	l := openTemp(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(audit.Event{Type: "session.start"}); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
	if _, err := l.Query(audit.Query{}); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Query after Close: got %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

// rawUpdate changes the file with bbolt directly, as a bug or a bad disk
// might.
func rawUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUndecodableRecord writes a record that is not JSON through bbolt:
// Query skips it, says so, and returns the rest.
func TestUndecodableRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	l := open(t, path, audit.Options{})
	evs := appendAll(t, l,
		audit.Event{Time: t0, Type: "session.start"},
		audit.Event{Time: t0.Add(time.Minute), Type: "session.end"},
		audit.Event{Time: t0.Add(2 * time.Minute), Type: "session.start"})
	l.Close()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("events"))
		c := b.Cursor()
		c.First()
		k, _ := c.Next()
		return b.Put(k, []byte("{garbage"))
	})

	l = open(t, path, audit.Options{})
	defer l.Close()
	res, err := l.Query(audit.Query{})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	wantKey := "seq 2 at " + evs[1].Time.Format(time.RFC3339Nano)
	if got := seqs(res.Events); !reflect.DeepEqual(got, []uint64{3, 1}) || res.Skipped != 1 || !reflect.DeepEqual(res.SkippedKeys, []string{wantKey}) {
		t.Errorf("got seqs %v, skipped %d %q; want [3 1], skipped 1 [%q]", got, res.Skipped, res.SkippedKeys, wantKey)
	}
	// A window that avoids the bad record skips nothing.
	if got := query(t, l, audit.Query{Until: evs[1].Time}); len(got) != 1 {
		t.Errorf("got %d events before the bad one, want 1", len(got))
	}
}

func TestFormatVersionMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	open(t, path, audit.Options{}).Close()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("2"))
	})
	l, err := audit.Open(path, audit.Options{})
	if err == nil {
		l.Close()
		t.Fatal("Open of another format succeeded, want an error")
	}
	if want := `format version is "2"`; !strings.Contains(err.Error(), want) {
		t.Errorf("got error %v, want one containing %q", err, want)
	}
}

// BenchmarkAppendParallel measures session-start appends from many sessions
// at once, each waiting for its fsync.
func BenchmarkAppendParallel(b *testing.B) {
	l := openTemp(b)
	ev := audit.Event{
		Type: "session.start", SessionID: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", User: "alice@example.com",
		Login: "root", Resource: "db-1", AgentID: "agent-1", ProxyID: "proxy-1",
		ClientAddr: "203.0.113.7:52344", Path: "proxy-1>agent", Outcome: "started",
	}
	b.SetParallelism(16) // sessions start concurrently far beyond GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
