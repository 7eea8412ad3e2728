package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/warren-proxy/warren/storage/audit"
)

// fillLog creates a real log at path through Open, then adds n events with
// bbolt directly, in the layout Append writes, a few hundred per
// transaction so that the file has free pages as a long-lived log does.
// Appending them one fsync at a time would take seconds.
func fillLog(t testing.TB, path string, n int) {
	t.Helper()
	open(t, path, audit.Options{}).Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("events"))
			for end := min(n, i+500); i < end; i++ {
				seq, err := b.NextSequence()
				if err != nil {
					return err
				}
				ev := audit.Event{
					Seq: seq, Time: t0.Add(time.Duration(i) * time.Second), Type: "session.start",
					SessionID: fmt.Sprintf("s-%07d", i), User: "alice@example.com", Login: "root",
					Resource: "db-1", AgentID: "agent-1", ProxyID: "proxy-1", ClientAddr: "203.0.113.7:52344",
					Path: "proxy-1>agent", Outcome: "started",
				}
				v, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				k := make([]byte, 16)
				binary.BigEndian.PutUint64(k, uint64(ev.Time.UnixNano()))
				binary.BigEndian.PutUint64(k[8:], seq)
				if err := b.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// findPage returns the size of the file's pages and the id of a page of
// type typ ("leaf", "branch", "freelist" or "free", as bbolt's Tx.Page
// names them) at or after the middle of the file.
func findPage(t testing.TB, path, typ string) (pageSize int, id int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pageSize = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		pages := int(tx.Size()) / pageSize
		for i := range pages {
			id := (pages/2 + i) % pages // from the middle on, then from the start
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && info.Type == typ {
				return fmt.Errorf("found %d", id)
			}
		}
		return errors.New("none")
	})
	if _, serr := fmt.Sscanf(err.Error(), "found %d", &id); serr != nil {
		t.Fatalf("no %s page in %s: %v", typ, path, err)
	}
	return pageSize, id
}

func writeAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantDamaged checks that err is Open's error for a damaged file: wrapping
// ErrDamaged, naming the file, saying what to do, and holding detail.
func wantDamaged(t *testing.T, err error, path, detail string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want ErrDamaged containing %q", detail)
	}
	msg := err.Error()
	for _, want := range []string{"audit log " + path + " is damaged", detail, "move it aside and restart", "bbolt check " + path} {
		if !errors.Is(err, audit.ErrDamaged) || !strings.Contains(msg, want) {
			t.Errorf("got error %q, want ErrDamaged containing %q", msg, want)
		}
	}
}

// TestOpenDamagedPage zeroes or scribbles over one page of a real log with
// many events: Open refuses a page in use with a clear error, and opens a
// log whose damaged page was free.
func TestOpenDamagedPage(t *testing.T) {
	garbage := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	tests := []struct {
		page   string
		fill   func(int) []byte
		detail string // "" means Open must succeed
	}{
		{"leaf", func(n int) []byte { return make([]byte, n) }, "identifies itself as page 0: it was zeroed or overwritten"},
		{"leaf", garbage, "identifies itself as page"},
		{"branch", func(n int) []byte { return make([]byte, n) }, "identifies itself as page 0"},
		{"freelist", func(n int) []byte { return make([]byte, n) }, "freelist page"},
		{"free", func(n int) []byte { return make([]byte, n) }, ""},
	}
	for _, tt := range tests {
		name := tt.page
		if tt.detail == "identifies itself as page" {
			name += " garbage"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			fillLog(t, path, 5000)
			pageSize, id := findPage(t, path, tt.page)
			writeAt(t, path, tt.fill(pageSize), int64(id)*int64(pageSize))

			l, err := audit.Open(path, audit.Options{})
			if tt.detail == "" {
				if err != nil {
					t.Fatalf("Open with a damaged free page: %v", err)
				}
				defer l.Close()
				if res, err := l.Query(audit.Query{Limit: 10_000}); err != nil || len(res.Events) != 5000 {
					t.Errorf("Query: got %d events, error %v; want 5000", len(res.Events), err)
				}
				return
			}
			if err == nil {
				l.Close()
			}
			wantDamaged(t, err, path, tt.detail)
		})
	}
}

// TestOpenTruncated cuts a real log to half its size: Open refuses it and
// leaves the file as it found it, rather than bbolt growing it back.
func TestOpenTruncated(t *testing.T) {
	for _, cut := range []struct {
		name string
		size func(int64) int64
		want string
	}{
		{"half", func(n int64) int64 { return n / 2 }, "it was truncated"},
		{"to a page and a bit", func(int64) int64 { return 5000 }, "not readable as a bbolt file"},
		{"inside the first page", func(int64) int64 { return 100 }, "not readable as a bbolt file"},
	} {
		t.Run(cut.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			fillLog(t, path, 5000)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			size := cut.size(fi.Size())
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			l, err := audit.Open(path, audit.Options{})
			if err == nil {
				l.Close()
			}
			wantDamaged(t, err, path, cut.want)
			if fi, err := os.Stat(path); err != nil || fi.Size() != size {
				t.Errorf("after Open the file is %d bytes (%v), want it left at %d", fi.Size(), err, size)
			}
		})
	}
}

// TestOpenBadMeta damages the meta pages: bbolt falls back on the other one
// if one is intact, and Open refuses a file with neither.
func TestOpenBadMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	fillLog(t, path, 1000)
	pageSize, _ := findPage(t, path, "leaf")
	garbage := bytes.Repeat([]byte{0xA5}, pageSize)

	// fillLog commits 500 events at a time: if the damaged meta page was
	// the latest, the last 500 are lost, as after a crash in a commit.
	writeAt(t, path, garbage, 0)
	var logs captureLog
	l := open(t, path, audit.Options{Logger: slog.New(&logs)})
	if n := len(query(t, l, audit.Query{Limit: 2000})); n != 1000 && n != 500 {
		t.Errorf("with one meta page damaged: got %d events, want 1000 or 500", n)
	}
	l.Close()
	if !slices.ContainsFunc(logs.all(), func(r string) bool {
		return strings.Contains(r, "WARN audit log partly damaged") && strings.Contains(r, "meta page 0 is damaged")
	}) {
		t.Errorf("no warning about the meta page among %q", logs.all())
	}

	writeAt(t, path, garbage, 0)
	writeAt(t, path, garbage, int64(pageSize))
	l, err := audit.Open(path, audit.Options{})
	if err == nil {
		l.Close()
	}
	wantDamaged(t, err, path, "not readable as a bbolt file")
}

// TestFlippedRecordOnDisk breaks the JSON of one event in the file itself,
// as a bad disk would: the file's structure is intact, so Open succeeds, and
// Query skips that record and reports it.
func TestFlippedRecordOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	fillLog(t, path, 3000)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	target := []byte(`"session_id":"s-0001234"`)
	i := bytes.Index(data, target)
	if i < 0 || bytes.Contains(data[i+1:], target) {
		t.Fatalf("want the record exactly once in the file, found it at %d", i)
	}
	writeAt(t, path, []byte{0, 0xff, 0}, int64(i))

	l := open(t, path, audit.Options{})
	defer l.Close()
	res, err := l.Query(audit.Query{Limit: 5000})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	wantKey := fmt.Sprintf("seq %d at %s", 1235, t0.Add(1234*time.Second).Format(time.RFC3339Nano))
	if len(res.Events) != 2999 || res.Skipped != 1 || !reflect.DeepEqual(res.SkippedKeys, []string{wantKey}) {
		t.Errorf("got %d events, %d skipped %q; want 2999, 1 skipped [%q]", len(res.Events), res.Skipped, res.SkippedKeys, wantKey)
	}
}

// TestSkippedKeysBounded checks that every skipped record is counted and
// only the first MaxSkippedKeys are listed.
func TestSkippedKeysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	fillLog(t, path, 100)
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("events"))
		c := b.Cursor()
		i := 0
		for k, _ := c.First(); k != nil && i < 3*audit.MaxSkippedKeys; k, _ = c.Next() {
			if err := b.Put(k, []byte("not json")); err != nil {
				return err
			}
			i++
		}
		// A key that is not 16 bytes is not an event either.
		return b.Put([]byte("short"), []byte("{}"))
	})
	l := open(t, path, audit.Options{})
	defer l.Close()
	res, err := l.Query(audit.Query{Order: audit.OldestFirst})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 100-3*audit.MaxSkippedKeys || res.Skipped != 3*audit.MaxSkippedKeys+1 || len(res.SkippedKeys) != audit.MaxSkippedKeys {
		t.Errorf("got %d events, %d skipped, %d keys listed; want %d, %d, %d", len(res.Events), res.Skipped, len(res.SkippedKeys), 100-3*audit.MaxSkippedKeys, 3*audit.MaxSkippedKeys+1, audit.MaxSkippedKeys)
	}
}

// TestDamageWhileOpen damages the file under an open log, as another
// process or a failing disk could: Query fails with ErrDamaged instead of
// crashing the process, whether bbolt panics (a zeroed page) or faults (a
// page past the end of the truncated file).
func TestDamageWhileOpen(t *testing.T) {
	t.Run("zeroed page", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.db")
		fillLog(t, path, 5000)
		pageSize, id := findPage(t, path, "leaf")
		l := open(t, path, audit.Options{})
		defer l.Close()
		writeAt(t, path, make([]byte, pageSize), int64(id)*int64(pageSize))
		_, err := l.Query(audit.Query{Limit: 10_000})
		wantDamaged(t, err, path, "bbolt panicked reading it")
		// The log still serves a window that avoids the page.
		if _, err := l.Query(audit.Query{Limit: 1}); err != nil {
			t.Errorf("Query of the newest event: %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.db")
		fillLog(t, path, 5000)
		l := open(t, path, audit.Options{})
		defer l.Close()
		if err := os.Truncate(path, 16384); err != nil {
			t.Fatal(err)
		}
		_, err := l.Query(audit.Query{Limit: 10_000})
		wantDamaged(t, err, path, "bbolt panicked reading it")
	})
}

// captureLog records a logger's messages.
type captureLog struct {
	mu   sync.Mutex
	recs []string // "LEVEL msg detail"
}

func (c *captureLog) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureLog) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *captureLog) WithGroup(string) slog.Handler            { return c }
func (c *captureLog) Handle(_ context.Context, r slog.Record) error {
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "detail" {
			s += " " + a.Value.String()
		}
		return true
	})
	c.mu.Lock()
	c.recs = append(c.recs, s)
	c.mu.Unlock()
	return nil
}

func (c *captureLog) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

func (c *captureLog) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.recs {
		if strings.HasPrefix(r, "ERROR") {
			out = append(out, r)
		}
	}
	return out
}

// TestReplacedLog swaps the log for another in the ways an operator or an
// intruder might: Open still opens it, and Replaced and an error-level log
// line say what happened, once.
func TestReplacedLog(t *testing.T) {
	tests := []struct {
		name    string
		replace func(t *testing.T, path string)
		want    string // in Replaced; "" means not reported
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced by an empty log (or deleted)"},
		{"empty file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "was replaced by an empty log (or deleted)"},
		{"another empty log", func(t *testing.T, path string) {
			other := filepath.Join(t.TempDir(), "other.db")
			open(t, other, audit.Options{}).Close()
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced by an empty log (or deleted)"},
		{"another log with events", func(t *testing.T, path string) {
			other := filepath.Join(t.TempDir(), "other.db")
			fillLog(t, other, 10)
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced: its id is"},
		{"emptied in place", func(t *testing.T, path string) {
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				if err := tx.DeleteBucket([]byte("events")); err != nil {
					return err
				}
				_, err := tx.CreateBucket([]byte("events"))
				return err
			})
		}, "was emptied"},
		{"mark deleted", func(t *testing.T, path string) {
			if err := os.Remove(path + ".mark"); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"untouched", func(t *testing.T, path string) {}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			l := open(t, path, audit.Options{})
			appendAll(t, l, audit.Event{Time: t0, Type: "session.start"})
			l.Close()
			tt.replace(t, path)

			var logs captureLog
			l = open(t, path, audit.Options{Logger: slog.New(&logs)})
			got := l.Replaced()
			l.Close()
			if tt.want == "" {
				if got != "" || len(logs.errors()) > 0 {
					t.Errorf("got Replaced %q, errors logged %q; want none", got, logs.errors())
				}
			} else {
				if !strings.Contains(got, tt.want) || !strings.HasPrefix(got, "audit log "+path) {
					t.Errorf("got Replaced %q, want it to name %s and contain %q", got, path, tt.want)
				}
				if errs := logs.errors(); len(errs) != 1 || !strings.Contains(errs[0], tt.want) {
					t.Errorf("got errors logged %q, want one with %q", errs, tt.want)
				}
			}
			// Reported once: the mark now follows the log in place.
			l = open(t, path, audit.Options{})
			defer l.Close()
			if got := l.Replaced(); got != "" {
				t.Errorf("second Open: got Replaced %q, want none", got)
			}
		})
	}
}

// TestMarkWrites checks when the mark is written: at creation, once when
// the log first holds an event, and not on later appends; and that it is
// private.
func TestMarkWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	readMark := func() (map[string]any, os.FileInfo) {
		t.Helper()
		b, err := os.ReadFile(path + ".mark")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("mark %q: %v", b, err)
		}
		fi, err := os.Stat(path + ".mark")
		if err != nil {
			t.Fatal(err)
		}
		return m, fi
	}
	l := open(t, path, audit.Options{})
	defer l.Close()
	m, fi := readMark()
	id := m["log_id"]
	if id == "" || m["has_events"] != false || fi.Mode().Perm() != 0o600 {
		t.Errorf("mark of a new log: %v mode %v; want an id, has_events false, mode 0600", m, fi.Mode().Perm())
	}
	appendAll(t, l, audit.Event{Type: "session.start"})
	m, first := readMark()
	if m["log_id"] != id || m["has_events"] != true {
		t.Errorf("mark after the first event: %v, want log_id %v and has_events true", m, id)
	}
	appendAll(t, l, audit.Event{Type: "session.end"})
	if _, fi := readMark(); !os.SameFile(first, fi) {
		t.Error("the mark was rewritten by a later append")
	}
	if matches, _ := filepath.Glob(path + ".mark.tmp*"); len(matches) > 0 {
		t.Errorf("temporary mark files left behind: %q", matches)
	}
}
