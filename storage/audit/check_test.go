package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// TestCheckFileHealthy runs checkFile on bbolt files shaped by random
// writes, deletes and nested, inline and large buckets, with several page
// sizes: it must find nothing where bbolt's own Tx.Check finds nothing, or
// Open would refuse a good log.
func TestCheckFileHealthy(t *testing.T) {
	for seed := range uint64(12) {
		pageSize := []int{1024, 4096, 16384}[seed%3]
		t.Run(fmt.Sprintf("seed=%d/page=%d", seed, pageSize), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			randomDB(t, path, pageSize, rand.New(rand.NewPCG(seed, 1)))
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			err = db.View(func(tx *bolt.Tx) error {
				for err := range tx.Check() {
					return err
				}
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatalf("bbolt's Tx.Check: %v; the test built a bad file", err)
			}
			if note, err := checkFile(path); err != nil || note != "" {
				t.Errorf("checkFile: note %q, error %v; want neither", note, err)
			}
		})
	}
}

// randomDB fills a bbolt file with random buckets, keys and values over
// many transactions.
func randomDB(t *testing.T, path string, pageSize int, r *rand.Rand) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := func() []byte {
		k := make([]byte, 2+r.IntN(40)) // not 1: the bucket names are 1 byte
		for i := range k {
			k[i] = byte(r.IntN(256))
		}
		return k
	}
	for range 60 {
		err := db.Update(func(tx *bolt.Tx) error {
			top, err := tx.CreateBucketIfNotExists([]byte{byte('a' + r.IntN(4))})
			if err != nil {
				return err
			}
			if r.IntN(6) == 0 {
				if err := top.DeleteBucket([]byte{byte('0' + r.IntN(3))}); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
					return err
				}
			}
			b := top
			// Sometimes one or two levels down, where small buckets
			// stay inline in their parent's leaf.
			for range r.IntN(3) {
				if b, err = b.CreateBucketIfNotExists([]byte{byte('0' + r.IntN(3))}); err != nil {
					return err
				}
			}
			for range r.IntN(200) {
				switch op := r.IntN(9); {
				case op < 6:
					v := make([]byte, r.IntN(300))
					if r.IntN(30) == 0 {
						v = make([]byte, r.IntN(3*pageSize)) // overflow pages
					}
					if err := b.Put(key(), v); err != nil {
						return err
					}
				default:
					c := b.Cursor()
					if k, v := c.Seek(key()); k != nil && v != nil {
						if err := c.Delete(); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkOpenCheck measures what checking a log costs at Open: checkFile,
// bbolt's Tx.Check for comparison, and the whole Open. The log has
// WARREN_AUDIT_BENCH_EVENTS events (default 100,000; the package comment's
// figure is for 1,000,000):
//
//	WARREN_AUDIT_BENCH_EVENTS=1000000 go test -run '^$' -bench OpenCheck -benchtime 5x ./storage/audit/
func BenchmarkOpenCheck(b *testing.B) {
	n := 100_000
	if s := os.Getenv("WARREN_AUDIT_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	path := filepath.Join(b.TempDir(), "audit.db")
	benchLog(b, path, n)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events, %d MB", n, fi.Size()>>20)

	b.Run("checkFile", func(b *testing.B) {
		for b.Loop() {
			if _, err := checkFile(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bbolt-Tx.Check", func(b *testing.B) {
		for b.Loop() {
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			err = db.View(func(tx *bolt.Tx) error {
				for err := range tx.Check() {
					return err
				}
				return nil
			})
			db.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Open", func(b *testing.B) {
		for b.Loop() {
			l, err := Open(path, Options{})
			if err != nil {
				b.Fatal(err)
			}
			l.Close()
		}
	})
}

// benchLog writes n realistic events in the layout Append writes, many per
// transaction.
func benchLog(b *testing.B, path string, n int) {
	l, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	l.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	for i := 0; i < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketEvents)
			bk.FillPercent = fillPercent // as Append
			for end := min(n, i+10_000); i < end; i++ {
				seq, _ := bk.NextSequence()
				ev := Event{
					Seq: seq, Time: t0.Add(time.Duration(i) * time.Second), Type: "session.end",
					SessionID: fmt.Sprintf("0190a1b2-c3d4-7e5f-8a9b-%012d", i), User: "alice@example.com", Login: "root",
					Resource: "db-1", AgentID: "agent-1-x7k2", ProxyID: "proxy-1", ClientAddr: "203.0.113.7:52344",
					Path: "proxy-1>agent", BytesIn: 4096, BytesOut: 1 << 20, Duration: time.Minute, Outcome: "ok",
				}
				v, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				if err := bk.Put(eventKey(ev.Time, seq), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
}
