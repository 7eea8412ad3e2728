package audit_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/storage/audit"
)

// FuzzOpen gives Open arbitrary bytes as an audit log file. Nothing may
// panic or crash the process: Open refuses the file with an error naming
// it, or opens it, and then a log Open accepted must serve queries, and
// the event it appends. The seed corpus in testdata/fuzz/FuzzOpen holds a small real
// log (1 KiB pages, 6 events, so that mutations reach every kind of page),
// the same log truncated, with a zeroed leaf and with one record's JSON
// broken, and a file that is not bbolt at all.
//
//	go test -run '^$' -fuzz FuzzOpen -fuzztime 5m ./storage/audit/
func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "audit.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(path, audit.Options{Logger: quiet, Timeout: time.Second})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Open error %q does not name the file", err)
			}
			return
		}
		defer l.Close()
		for _, q := range []audit.Query{
			{},
			{Order: audit.OldestFirst, Limit: 2},
			{User: "alice", Since: t0, Until: t0.Add(time.Hour), Limit: 1},
		} {
			if _, err := l.Query(q); err != nil {
				t.Errorf("Query(%+v) of a log Open accepted: %v", q, err)
			}
		}
		// Append may fail on a file that is sound but odd (a bucket
		// sequence at its maximum); it must not panic.
		if _, err := l.Append(audit.Event{Time: t0, Type: "session.start", User: "alice"}); err != nil {
			return
		}
		if res, err := l.Query(audit.Query{User: "alice", Limit: 1}); err != nil || len(res.Events) != 1 {
			t.Errorf("Query after Append: %d events, error %v; want 1", len(res.Events), err)
		}
	})
}

// TestRandomDamage is FuzzOpen's deterministic cousin for every test run:
// it damages a real log (1 KiB pages) at random, past its meta pages so that
// bbolt accepts the file, and checks that Open refuses it or serves it,
// without panicking. Damage bbolt cannot see (a value's bytes) must leave a
// log that still queries and appends.
func TestRandomDamage(t *testing.T) {
	iterations := 200
	if testing.Short() {
		iterations = 20
	}
	seed, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzOpen", "valid-log"))
	if err != nil {
		t.Fatal(err)
	}
	valid := corpusBytes(t, seed)
	const pageSize = 1024
	quiet := slog.New(slog.DiscardHandler)
	r := rand.New(rand.NewPCG(1, 2))
	refused := 0
	for i := range iterations {
		data := bytes.Clone(valid)
		pages := len(data) / pageSize
		for range 1 + r.IntN(3) {
			page := 2 + r.IntN(pages-2)
			off := page*pageSize + r.IntN(pageSize)
			switch r.IntN(4) {
			case 0: // a few random bytes
				for j := range 1 + r.IntN(8) {
					if off+j < len(data) {
						data[off+j] = byte(r.IntN(256))
					}
				}
			case 1: // a page header field
				hdr := page*pageSize + []int{0, 8, 10, 12}[r.IntN(4)]
				binary.LittleEndian.PutUint16(data[hdr:], uint16(r.Uint32()))
			case 2: // an element's offset or size, in the first elements
				e := page*pageSize + 16 + 16*r.IntN(4) + 4*r.IntN(4)
				binary.LittleEndian.PutUint32(data[e:], r.Uint32()>>r.IntN(32))
			case 3: // another page copied over this one
				src := 2 + r.IntN(pages-2)
				copy(data[page*pageSize:(page+1)*pageSize], valid[src*pageSize:(src+1)*pageSize])
			}
		}
		path := filepath.Join(t.TempDir(), "audit.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(path, audit.Options{Logger: quiet})
		if err != nil {
			if !errors.Is(err, audit.ErrDamaged) {
				t.Errorf("iteration %d: Open: %v, want ErrDamaged", i, err)
			}
			refused++
			continue
		}
		if _, err := l.Query(audit.Query{}); err != nil {
			t.Errorf("iteration %d: Query of a log Open accepted: %v", i, err)
		}
		if _, err := l.Append(audit.Event{Type: "session.start"}); err != nil {
			t.Errorf("iteration %d: Append to a log Open accepted: %v", i, err)
		}
		l.Close()
	}
	t.Logf("%d of %d damaged logs refused", refused, iterations)
}

// corpusBytes decodes a "go test fuzz v1" file holding one []byte.
func corpusBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	_, lit, ok := strings.Cut(strings.TrimSpace(string(b)), "\n[]byte(")
	if !ok || !strings.HasSuffix(lit, ")") {
		t.Fatal("not a fuzz corpus file with one []byte")
	}
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}
