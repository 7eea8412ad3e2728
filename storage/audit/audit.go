// Package audit keeps a proxy's audit log in bbolt: one event per session
// start, end or refusal, with who, what, where, how many bytes and how it
// ended.
//
// Append returns only once the event is fsync'd, so a session is reported
// as started only after its start event is on disk. Concurrent appends share
// one transaction and one fsync (bbolt's DB.Batch).
//
// # Layout
//
// Bucket "events" maps a 16-byte key to the event as JSON. The key is the
// event's time in Unix nanoseconds then its Seq, both 8-byte big-endian, so
// keys sort by time and a time window is one cursor Seek. Seq comes from the
// bucket's sequence: it is unique and increasing in commit order, across
// restarts too. Bucket "meta" holds the format version; a file written in
// another format is refused at Open rather than misread.
package audit

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	// DefaultTimeout is how long Open waits for another process to release
	// the file's lock.
	DefaultTimeout = 2 * time.Second
	// DefaultLimit caps a Query whose Limit is 0.
	DefaultLimit = 1000

	formatVersion = "1"

	// batchDelay is how long an append waits for others to share its
	// transaction and fsync. bbolt's default of 10ms would be added to
	// every session start on a quiet proxy; an fsync costs well under a
	// millisecond on an SSD, so 1ms loses little batching.
	batchDelay = time.Millisecond
)

var (
	bucketEvents = []byte("events")
	bucketMeta   = []byte("meta")
	keyVersion   = []byte("version")

	// maxTime is the last time a key can hold.
	maxTime = time.Unix(0, math.MaxInt64)
)

var (
	// ErrClosed is returned by calls on a Log after Close.
	ErrClosed = errors.New("audit log is closed")
	// ErrInUse is returned by Open when another Log, in this process or
	// another, holds the file.
	ErrInUse = errors.New("in use by another process")
	// ErrCorrupt is returned when a stored event cannot be decoded; the
	// error names the event's key.
	ErrCorrupt = errors.New("corrupt record")
)

// Event is one audit record.
type Event struct {
	Seq        uint64        `json:"seq"` // assigned by Append
	Time       time.Time     `json:"time"`
	Type       string        `json:"type"` // "session.start", "session.end", "session.refused"
	SessionID  string        `json:"session_id"`
	User       string        `json:"user"`
	Login      string        `json:"login,omitempty"`
	Resource   string        `json:"resource"`
	AgentID    string        `json:"agent_id,omitempty"`
	ProxyID    string        `json:"proxy_id,omitempty"`
	ClientAddr string        `json:"client_addr,omitempty"`
	Path       string        `json:"path,omitempty"`      // e.g. "proxy-1>agent"
	BytesIn    int64         `json:"bytes_in,omitempty"`  // client -> resource
	BytesOut   int64         `json:"bytes_out,omitempty"` // resource -> client
	Duration   time.Duration `json:"duration,omitempty"`
	Outcome    string        `json:"outcome"` // "ok", "error", "refused", "started"
	Error      string        `json:"error,omitempty"`
}

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Logger receives the log's own messages. Nil means slog.Default().
	Logger *slog.Logger
	// Timeout is how long Open waits for the file's lock before failing
	// with ErrInUse. Zero means DefaultTimeout.
	Timeout time.Duration
	// Now stamps events appended without a Time. Nil means time.Now.
	Now func() time.Time
}

// Log is an audit log open on one file. It is safe for concurrent use.
type Log struct {
	path string
	now  func() time.Time
	db   *bolt.DB

	// mu is held shared by every call in flight and exclusively by Close,
	// so Close waits for them and no call reaches a closed DB.
	mu     sync.RWMutex
	closed bool // guarded by mu
}

// Open opens the audit log at path, creating it (mode 0600) and its
// directory (mode 0700) if needed. If another process holds the file, Open
// fails with ErrInUse after Options.Timeout.
func Open(path string, opts Options) (*Log, error) {
	if path == "" {
		return nil, errors.New("open audit log: path is empty; set the audit log file")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("open audit log: timeout %v is negative", opts.Timeout)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("audit log %s is %w (waited %v for its lock); stop the other warren process or choose another audit log", path, ErrInUse, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	if err := restrictMode(path, logger); err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := db.Update(initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return &Log{path: path, now: now, db: db}, nil
}

// restrictMode makes path private to its owner. bbolt creates new files with
// 0600, but an existing file may have been created or copied looser.
func restrictMode(path string, logger *slog.Logger) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		logger.Warn("audit log was readable by others; setting mode 0600", "path", path, "mode", mode.String())
		return os.Chmod(path, 0o600)
	}
	return nil
}

// initBuckets creates the buckets of a new file and checks the format
// version of an existing one.
func initBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	switch v := meta.Get(keyVersion); {
	case v == nil:
		if err := meta.Put(keyVersion, []byte(formatVersion)); err != nil {
			return fmt.Errorf("write format version: %w", err)
		}
	case string(v) != formatVersion:
		return fmt.Errorf("audit log format version is %q, this build reads %q; it was written by another Warren version", v, formatVersion)
	}
	if _, err := tx.CreateBucketIfNotExists(bucketEvents); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

// Close closes the log, waiting for calls in flight. Calls after Close
// return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close audit log %s: %w", l.path, err)
	}
	return nil
}

// Append stores ev and returns it as stored: with Seq assigned, Time set to
// Options.Now() if it was zero, and Time in UTC. It returns once the event is
// fsync'd. Any Seq in ev is ignored.
func (l *Log) Append(ev Event) (Event, error) {
	if ev.Type == "" {
		return Event{}, errors.New("append audit event: type is empty")
	}
	if ev.Time.IsZero() {
		ev.Time = l.now()
	}
	ev.Time = ev.Time.UTC()
	if ev.Time.Before(time.Unix(0, 0)) || ev.Time.After(maxTime) {
		return Event{}, fmt.Errorf("append audit event: time %v is outside 1970 to 2262; check the clock", ev.Time)
	}
	ev.Seq = 0

	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return Event{}, ErrClosed
	}
	// Batch may run fn more than once, so fn sets every output afresh.
	var stored Event
	err := l.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		stored = ev
		stored.Seq = seq
		v, err := json.Marshal(stored)
		if err != nil {
			return err
		}
		return b.Put(eventKey(stored.Time, seq), v)
	})
	if err != nil {
		return Event{}, fmt.Errorf("append audit event %s: %w", ev.Type, err)
	}
	return stored, nil
}

// Query selects events. Zero fields do not filter.
type Query struct {
	Since time.Time // events at or after Since
	Until time.Time // events before Until

	// Exact matches on the event's fields.
	SessionID, User, Resource string

	// Limit caps the result; 0 means DefaultLimit.
	Limit int
}

// Query returns the first events matching q in time order, ties in Seq
// order.
func (l *Log) Query(q Query) ([]Event, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("query audit log: limit %d is negative", q.Limit)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return nil, fmt.Errorf("query audit log: until %v is before since %v", q.Until, q.Since)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	if q.Since.After(maxTime) {
		return nil, nil
	}
	start := make([]byte, 16)
	if q.Since.After(time.Unix(0, 0)) {
		copy(start, eventKey(q.Since, 0))
	}
	until := uint64(math.MaxUint64)
	if !q.Until.IsZero() {
		switch {
		case q.Until.Before(time.Unix(0, 0)):
			return nil, nil
		case !q.Until.After(maxTime):
			until = uint64(q.Until.UnixNano())
		}
	}

	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	var out []Event
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if len(k) != 16 {
				return fmt.Errorf("audit record %x: %w: key is %d bytes, want 16", k, ErrCorrupt, len(k))
			}
			if binary.BigEndian.Uint64(k) >= until {
				break
			}
			var ev Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("audit record %s: %w: %w", describeKey(k), ErrCorrupt, err)
			}
			if !q.matches(ev) {
				continue
			}
			out = append(out, ev)
			if len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query audit log: %w", err)
	}
	return out, nil
}

func (q Query) matches(ev Event) bool {
	return (q.SessionID == "" || ev.SessionID == q.SessionID) &&
		(q.User == "" || ev.User == q.User) &&
		(q.Resource == "" || ev.Resource == q.Resource)
}

// eventKey is the key of the event at t with seq; t is within [1970, maxTime].
func eventKey(t time.Time, seq uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

// describeKey names a 16-byte key for an error message.
func describeKey(k []byte) string {
	t := time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC()
	return fmt.Sprintf("seq %d at %s", binary.BigEndian.Uint64(k[8:]), t.Format(time.RFC3339Nano))
}
