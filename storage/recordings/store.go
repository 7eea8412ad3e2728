package recordings

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/internal/model"
)

// ErrNotFound is returned for a recording the store does not hold.
var ErrNotFound = errors.New("no such recording")

// Meta describes a stored recording.
type Meta struct {
	ID       string `json:"id"`
	Session  string `json:"session"`
	Agent    string `json:"agent"`
	User     string `json:"user"`
	Resource string `json:"resource"`
	Login    string `json:"login,omitempty"`
	// Start is the cast header's timestamp; Duration its last event's
	// time.
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Size     int64         `json:"size"`
	SHA256   string        `json:"sha256"`
	// Input says the recording holds what the user typed.
	Input bool `json:"input,omitempty"`
	// Truncated says the recording stopped before its session ended (its
	// cap, or the node could not write it).
	Truncated bool      `json:"truncated,omitempty"`
	Stored    time.Time `json:"stored"`
}

// StoreOptions configures OpenStore.
type StoreOptions struct {
	// MaxBytes bounds one recording.
	MaxBytes int64
	// Now stamps stored recordings; nil means time.Now.
	Now func() time.Time
}

// Store is a proxy's recordings. It is safe for concurrent use.
type Store struct {
	dir  string
	db   *bolt.DB
	opts StoreOptions
}

var bucket = []byte("recordings")

// OpenStore opens (creating) the store in dir.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Join(dir, "casts"), 0o700); err != nil {
		return nil, fmt.Errorf("create recording store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open recording index %s: %w", filepath.Join(dir, "index.db"), err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open recording index: %w", err)
	}
	return &Store{dir: dir, db: db, opts: opts}, nil
}

// Close closes the index.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) castPath(id string) string { return filepath.Join(s.dir, "casts", id+".cast") }

// Put stores the recording m.ID read from r, which must be m.Size bytes
// whose SHA-256 is m.SHA256 and a valid cast. Start, Duration, Input and
// Truncated are taken from the cast. Storing the same bytes again returns
// the stored Meta.
func (s *Store) Put(m Meta, r io.Reader) (Meta, error) {
	if !validID(m.ID) {
		return Meta{}, fmt.Errorf("invalid recording id %s", model.Quote(m.ID))
	}
	if have, err := s.Meta(m.ID); err == nil {
		if have.SHA256 == m.SHA256 {
			return have, nil
		}
		return Meta{}, fmt.Errorf("a different recording %s is stored already", m.ID)
	}
	if s.opts.MaxBytes > 0 && m.Size > s.opts.MaxBytes {
		return Meta{}, fmt.Errorf("recording of %d bytes; at most %d are stored", m.Size, s.opts.MaxBytes)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "casts"), ".upload-*")
	if err != nil {
		return Meta{}, fmt.Errorf("store recording: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, m.Size+1))
	if err != nil {
		return Meta{}, fmt.Errorf("receive recording: %w", err)
	}
	if n != m.Size {
		return Meta{}, fmt.Errorf("received %d bytes of a recording offered as %d", n, m.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != m.SHA256 {
		return Meta{}, fmt.Errorf("the recording's SHA-256 is %s, not %s as offered", sum, m.SHA256)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Meta{}, fmt.Errorf("store recording: %w", err)
	}
	sum, err := asciicast.Validate(tmp, asciicast.Limits{MaxBytes: m.Size})
	if err != nil {
		return Meta{}, fmt.Errorf("the recording is not a valid asciicast v2 file: %w", err)
	}
	if sum.Header.Timestamp > 0 {
		m.Start = time.Unix(sum.Header.Timestamp, 0).UTC()
	}
	m.Duration = time.Duration(sum.Duration * float64(time.Second))
	m.Input, m.Truncated = sum.Inputs > 0, sum.Truncated
	m.Stored = s.opts.Now().UTC()
	if err := tmp.Sync(); err != nil {
		return Meta{}, fmt.Errorf("store recording: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.castPath(m.ID)); err != nil {
		return Meta{}, fmt.Errorf("store recording: %w", err)
	}
	if err := syncDir(filepath.Join(s.dir, "casts")); err != nil {
		return Meta{}, fmt.Errorf("store recording: %w", err)
	}
	b, _ := json.Marshal(m)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(m.ID), b) }); err != nil {
		return Meta{}, fmt.Errorf("index recording: %w", err)
	}
	return m, nil
}

// Meta returns a stored recording's metadata.
func (s *Store) Meta(id string) (Meta, error) {
	var m Meta
	if !validID(id) {
		return m, fmt.Errorf("invalid recording id %s", model.Quote(id))
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket).Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		return json.Unmarshal(b, &m)
	})
	return m, err
}

// Open returns a stored recording's metadata and its cast.
func (s *Store) Open(id string) (Meta, *os.File, error) {
	m, err := s.Meta(id)
	if err != nil {
		return m, nil, err
	}
	f, err := os.Open(s.castPath(id))
	if err != nil {
		return m, nil, fmt.Errorf("open recording %s: %w", id, err)
	}
	return m, f, nil
}

// Expire deletes the recordings stored before cutoff, index entry and cast
// file, and returns how many it deleted and their bytes. A cast a reader
// has open stays readable until it is closed.
func (s *Store) Expire(cutoff time.Time) (n int, bytes int64, err error) {
	var old []Meta
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error {
			var m Meta
			if json.Unmarshal(v, &m) == nil && m.Stored.Before(cutoff) {
				old = append(old, m)
			}
			return nil
		})
	}); err != nil {
		return 0, 0, fmt.Errorf("expire recordings: %w", err)
	}
	for _, m := range old {
		// The index entry first: a crash in between leaves a file no
		// listing shows, never a listing of a file that is gone.
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(m.ID)) }); err != nil {
			return n, bytes, fmt.Errorf("expire recording %s: %w", m.ID, err)
		}
		if err := os.Remove(s.castPath(m.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, bytes, fmt.Errorf("expire recording %s: %w", m.ID, err)
		}
		n++
		bytes += m.Size
	}
	return n, bytes, nil
}

// Query selects recordings; zero fields select everything.
type Query struct {
	User     string
	Resource string
	Session  string
	Since    time.Time
	Limit    int
}

// List returns the recordings q selects, newest first, at most q.Limit
// (and whether more matched).
func (s *Store) List(q Query) ([]Meta, bool, error) {
	var out []Meta
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error {
			var m Meta
			if json.Unmarshal(v, &m) != nil {
				return nil
			}
			if q.User != "" && m.User != q.User || q.Resource != "" && m.Resource != q.Resource ||
				q.Session != "" && m.Session != q.Session || !q.Since.IsZero() && m.Start.Before(q.Since) {
				return nil
			}
			out = append(out, m)
			return nil
		})
	})
	if err != nil {
		return nil, false, fmt.Errorf("list recordings: %w", err)
	}
	slices.SortFunc(out, func(a, b Meta) int {
		if c := b.Start.Compare(a.Start); c != 0 {
			return c
		}
		return cmpString(a.ID, b.ID)
	})
	more := false
	if q.Limit > 0 && len(out) > q.Limit {
		out, more = out[:q.Limit], true
	}
	return out, more, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
