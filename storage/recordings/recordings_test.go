package recordings

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/asciicast"
)

func castBytes(t *testing.T, outputs ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := asciicast.NewWriter(&b, asciicast.Header{Timestamp: 1764756000}, asciicast.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outputs {
		_ = w.Output(time.Duration(i+1)*time.Second, []byte(o))
	}
	return b.Bytes()
}

func TestSpoolLifecycle(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Create(SpoolMeta{ID: "ab12", Ticket: "tk", Started: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cast := castBytes(t, "hello")
	if _, err := f.Write(cast); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Pending(); len(p) != 0 {
		t.Fatalf("pending before commit: %v", p)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := s.Pending()
	if err != nil || len(p) != 1 || p[0].ID != "ab12" || p[0].Ticket != "tk" {
		t.Fatalf("Pending = %v, %v", p, err)
	}
	r, err := s.Open("ab12")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, cast) {
		t.Errorf("spooled %q, want %q", got, cast)
	}
	m, err := s.MarkUploaded("ab12", "proxy-1")
	if err != nil || len(m.Uploaded) != 1 {
		t.Fatalf("MarkUploaded = %v, %v", m, err)
	}
	if m, _ = s.MarkUploaded("ab12", "proxy-1"); len(m.Uploaded) != 1 {
		t.Errorf("uploaded twice to one proxy: %v", m.Uploaded)
	}
	if err := s.Remove("ab12"); err != nil {
		t.Fatal(err)
	}
	if s.Used() != 0 {
		t.Errorf("Used = %d after removing everything", s.Used())
	}
	if _, err := s.Create(SpoolMeta{ID: "../x"}); err == nil {
		t.Error("Create took an id with a path in it")
	}
}

func TestSpoolFull(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 600)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Create(SpoolMeta{ID: "ab12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 400)); err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 400))
	if !errors.Is(err, ErrSpoolFull) || !strings.Contains(err.Error(), "spool_max_bytes") {
		t.Errorf("write past the cap: got %v, want ErrSpoolFull saying what to do", err)
	}
}

// TestSpoolSealAfterFull: a recording the spool refused is closed with a
// marker past the cap, ends on whole lines and reads as truncated.
func TestSpoolSealAfterFull(t *testing.T) {
	s, err := OpenSpool(t.TempDir(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Create(SpoolMeta{ID: "ab12"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := asciicast.NewWriter(f, asciicast.Header{}, asciicast.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for i := 0; werr == nil && i < 10000; i++ {
		werr = w.Output(time.Duration(i)*time.Millisecond, bytes.Repeat([]byte("y"), 1000))
	}
	if !errors.Is(werr, ErrSpoolFull) {
		t.Fatalf("writes into a 64 KiB spool ended with %v, want ErrSpoolFull", werr)
	}
	if err := f.Seal(asciicast.AppendEvent(nil, 20*time.Second, asciicast.Marker, asciicast.StopMarker+"spool full")); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Open("ab12")
	defer r.Close()
	sum, err := asciicast.Validate(r, asciicast.Limits{})
	if err != nil {
		t.Fatalf("sealed recording is invalid: %v", err)
	}
	if !sum.Truncated || sum.Output == 0 {
		t.Errorf("sealed recording %+v: want output and Truncated", sum)
	}
	if info, _ := r.Stat(); s.Used() < info.Size() {
		t.Errorf("spool counts %d bytes, the file alone has %d", s.Used(), info.Size())
	}
	// Its upload is noted although the spool is full, and it leaves.
	if m, err := s.MarkUploaded("ab12", "proxy-1"); err != nil || len(m.Uploaded) != 1 {
		t.Fatalf("MarkUploaded in a full spool = %+v, %v", m, err)
	}
	if err := s.Remove("ab12"); err != nil || s.Used() != 0 {
		t.Errorf("Remove: %v; spool counts %d bytes after", err, s.Used())
	}
}

// TestSpoolRecoversAfterAStop: a .part left by a stopped agent becomes a
// valid, pending recording that keeps every whole line.
func TestSpoolRecoversAfterAStop(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenSpool(dir, 0)
	f, _ := s.Create(SpoolMeta{ID: "ab12", Started: time.Unix(1, 0)})
	cast := castBytes(t, "one", "two")
	_, _ = f.Write(append(cast, []byte(`[3.0,"o","thr`)...)) // cut mid-line
	f.f.Close()

	s2, err := OpenSpool(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s2.Pending()
	if len(p) != 1 {
		t.Fatalf("pending after restart: %v", p)
	}
	r, _ := s2.Open("ab12")
	defer r.Close()
	sum, err := asciicast.Validate(r, asciicast.Limits{})
	if err != nil {
		t.Fatalf("recovered recording is invalid: %v", err)
	}
	if sum.Output != int64(len("onetwo")) || len(sum.Markers) != 1 || !strings.Contains(sum.Markers[0], "agent stopped") || sum.Duration != 2 {
		t.Errorf("recovered %+v", sum)
	}
}

func put(t *testing.T, s *Store, id string, cast []byte) (Meta, error) {
	t.Helper()
	sum := sha256.Sum256(cast)
	return s.Put(Meta{ID: id, Session: id, Agent: "agent-1", User: "alice", Resource: "node1", Size: int64(len(cast)), SHA256: hex.EncodeToString(sum[:])}, bytes.NewReader(cast))
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, StoreOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cast := castBytes(t, "hello", "world")
	m, err := put(t, s, "ab12", cast)
	if err != nil {
		t.Fatal(err)
	}
	if m.Duration != 2*time.Second || m.Start.Unix() != 1764756000 || m.Input || m.Truncated {
		t.Errorf("stored %+v", m)
	}
	if _, err := put(t, s, "ab12", cast); err != nil {
		t.Errorf("the same bytes again: %v", err)
	}
	if _, err := put(t, s, "ab12", castBytes(t, "other")); err == nil || !strings.Contains(err.Error(), "stored already") {
		t.Errorf("other bytes under a stored id: %v", err)
	}
	_, f, err := s.Open("ab12")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, cast) {
		t.Errorf("read back %q", got)
	}
	if _, _, err := s.Open("cd34"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of a missing id: %v", err)
	}

	cases := []struct {
		name string
		meta Meta
		body []byte
		want string
	}{
		{"sha mismatch", Meta{ID: "x1", Size: int64(len(cast)), SHA256: strings.Repeat("0", 64)}, cast, "SHA-256 is"},
		{"short", Meta{ID: "x2", Size: int64(len(cast)) + 5, SHA256: strings.Repeat("0", 64)}, cast, "received"},
		{"not a cast", Meta{ID: "x3"}, []byte("not json at all\n"), "not a valid asciicast"},
		{"bad id", Meta{ID: "../../etc/passwd"}, cast, "invalid recording id"},
		{"too big", Meta{ID: "x4", Size: 2 << 20}, cast, "at most 1048576"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.meta.SHA256 == "" {
				sum := sha256.Sum256(c.body)
				c.meta.SHA256 = hex.EncodeToString(sum[:])
			}
			if c.meta.Size == 0 {
				c.meta.Size = int64(len(c.body))
			}
			_, err := s.Put(c.meta, bytes.NewReader(c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir + "/casts"); len(entries) != 1 {
		t.Errorf("casts dir holds %d files after refusals, want 1", len(entries))
	}

	_, _ = put(t, s, "cd34", castBytes(t, "x"))
	if l, _, _ := s.List(Query{User: "alice"}); len(l) != 2 {
		t.Errorf("List(alice) = %d recordings, want 2", len(l))
	}
	if l, more, _ := s.List(Query{Limit: 1}); len(l) != 1 || !more {
		t.Errorf("List(limit 1) = %d, more %v", len(l), more)
	}
	if l, _, _ := s.List(Query{User: "bob"}); len(l) != 0 {
		t.Errorf("List(bob) = %v", l)
	}
	s.Close()
	s2, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l, _, _ := s2.List(Query{}); len(l) != 2 {
		t.Errorf("after reopening: %d recordings, want 2", len(l))
	}
}

// TestStoreExpire: Expire deletes what was stored before its cutoff, index
// entry and file, keeps the rest, and a second run finds nothing.
func TestStoreExpire(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := OpenStore(dir, StoreOptions{MaxBytes: 1 << 20, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old, err := put(t, s, "old1", castBytes(t, "old"))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(48 * time.Hour)
	if _, err := put(t, s, "new1", castBytes(t, "new")); err != nil {
		t.Fatal(err)
	}
	n, size, err := s.Expire(now.Add(-24 * time.Hour))
	if err != nil || n != 1 || size != old.Size {
		t.Fatalf("Expire: %d recordings, %d bytes, %v; want 1 of %d bytes", n, size, err, old.Size)
	}
	if _, err := s.Meta("old1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the expired recording is still indexed: %v", err)
	}
	if _, err := os.Stat(s.castPath("old1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the expired recording's file is still there: %v", err)
	}
	list, _, err := s.List(Query{})
	if err != nil || len(list) != 1 || list[0].ID != "new1" {
		t.Errorf("after expiry the store lists %+v, %v; want new1 only", list, err)
	}
	if _, f, err := s.Open("new1"); err != nil {
		t.Errorf("the kept recording: %v", err)
	} else {
		f.Close()
	}
	if n, _, err := s.Expire(now.Add(-24 * time.Hour)); n != 0 || err != nil {
		t.Errorf("a second Expire: %d, %v", n, err)
	}
}
