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
// restarts too. Bucket "meta" holds the format version and the log's random
// id; a file written in another format is refused at Open rather than
// misread. The id was added without a format change: a log without one gets
// one at Open.
//
// # Damage
//
// bbolt trusts its file: a damaged page makes it panic, or fault on memory
// past its mapping, which no recover catches. So Open checks the file's
// structure (checkFile) before bbolt opens it for writing, and refuses a
// damaged one with an error wrapping ErrDamaged that names the file and
// says what to do; it never panics and never lets bbolt grow a truncated
// file back with zeros. The check reads every page in use: 0.3 to 0.4 s per
// million events (450 MB) from the page cache on a busy 2-core VM, a little
// faster than bbolt's Tx.Check (0.5 s; BenchmarkOpenCheck). That is the
// price of starting only on a log that cannot crash the proxy later; it
// grows with the log, which is not rotated yet.
//
// Damage that appears while the log is open (another process writing the
// file, a failing disk) is caught in Query: bbolt's panics and memory faults
// there become an error wrapping ErrDamaged. A record whose JSON does not
// decode is not damage to the file: Query skips it and reports it in
// Result.
//
// Next to the log, the file path+".mark" records the log's id and whether
// it has held events (see mark.go); Open compares it with the log and
// reports, through Replaced and an error-level log line, a log that was
// replaced or emptied, while still opening it: refusing would stop every
// session.
package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
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
	// MaxSkippedKeys caps Result.SkippedKeys.
	MaxSkippedKeys = 10

	formatVersion = "1"

	// batchDelay is how long an append waits for others to share its
	// transaction and fsync. bbolt's default of 10ms would be added to
	// every session start on a quiet proxy; an fsync costs well under a
	// millisecond on an SSD, so 1ms loses little batching.
	batchDelay = time.Millisecond

	// fillPercent is how full Append leaves the events' pages when they
	// split. Keys are times, so appends land at the end of the bucket,
	// and bbolt's default of half full would leave every page half empty
	// for good: the file would be twice as large and take twice as long
	// to check at Open and to scan.
	fillPercent = 0.9
)

var (
	bucketEvents = []byte("events")
	bucketMeta   = []byte("meta")
	keyVersion   = []byte("version")
	keyID        = []byte("id")

	// maxTime is the last time a key can hold.
	maxTime = time.Unix(0, math.MaxInt64)
)

var (
	// ErrClosed is returned by calls on a Log after Close.
	ErrClosed = errors.New("audit log is closed")
	// ErrInUse is returned by Open when another Log, in this process or
	// another, holds the file.
	ErrInUse = errors.New("in use by another process")
	// ErrDamaged is wrapped by the errors of Open and Query when the file's
	// structure is damaged; the error names the file and the damage.
	ErrDamaged = errors.New("damaged")
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
	// Recording, on the end of a session to an agent's embedded SSH
	// server, is the id its PTY sessions' recordings are listed under
	// (`warren recordings ls --session ID`; the first is ID itself, more
	// sessions on one connection ID-2, ID-3 ...). A session that ran no
	// PTY has none.
	Recording string `json:"recording,omitempty"`
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
	path     string
	id       string
	replaced string
	now      func() time.Time
	logger   *slog.Logger
	db       *bolt.DB

	// hasEvents is set once the log holds an event; markMu serializes the
	// one mark update that follows.
	hasEvents atomic.Bool
	markMu    sync.Mutex

	// mu is held shared by every call in flight and exclusively by Close,
	// so Close waits for them and no call reaches a closed DB.
	mu     sync.RWMutex
	closed bool // guarded by mu
}

// Open opens the audit log at path, creating it (mode 0600) and its
// directory (mode 0700) if needed. If another process holds the file, Open
// fails with ErrInUse after Options.Timeout. A damaged file is refused
// with an error wrapping ErrDamaged. A log that replaced another (see
// Replaced) is opened and reported.
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
	if err := precheck(path, timeout, logger); err != nil {
		return nil, err
	}
	// precheck makes bbolt's reads at Open (the freelist) safe; protect is
	// for a file changed in between. Should it fire, the half-opened file
	// is left to the garbage collector, which beats a crash.
	var db *bolt.DB
	err := protect(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
		return err
	})
	var pe *panicError
	switch {
	case errors.As(err, &pe):
		return nil, damaged(path, err)
	case err != nil:
		return nil, openError(path, timeout, err)
	}
	db.MaxBatchDelay = batchDelay
	if err := restrictMode(path, logger); err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	var st logState
	err = protect(func() error {
		return db.Update(func(tx *bolt.Tx) (err error) {
			st, err = initBuckets(tx)
			return err
		})
	})
	if err != nil {
		db.Close()
		if errors.As(err, &pe) || errors.Is(err, errNotBucket) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	l := &Log{path: path, id: st.id, now: now, logger: logger, db: db}
	l.hasEvents.Store(st.hasEvents)
	l.replaced = checkMark(path, st.id, st.hasEvents, logger.Warn)
	if l.replaced != "" {
		logger.Error("audit log replaced", "path", path, "detail", l.replaced)
	}
	return l, nil
}

// precheck checks an existing file's structure before bbolt opens it for
// writing, which would read its freelist and let a commit grow a truncated
// file. A read-only open first takes the shared lock, so that a file another
// process is writing is reported as in use, not as damaged, and validates
// the meta pages; it reads nothing else.
func precheck(path string, timeout time.Duration, logger *slog.Logger) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // bbolt creates it
	case err != nil:
		return fmt.Errorf("open audit log: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("open audit log: %s is not a regular file", path)
	case fi.Size() == 0:
		return nil // bbolt initializes it, under its lock
	}
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return openError(path, timeout, err)
	}
	defer ro.Close()
	note, err := checkFile(path)
	if err != nil {
		return damaged(path, err)
	}
	if note != "" {
		logger.Warn("audit log partly damaged; opening it", "path", path, "detail", note)
	}
	return nil
}

// openError describes an error of bolt.Open: the lock, the file system, or
// else the file's content.
func openError(path string, timeout time.Duration, err error) error {
	var pe *fs.PathError
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("audit log %s is %w (waited %v for its lock); stop the other warren process or choose another audit log", path, ErrInUse, timeout)
	case errors.As(err, &pe):
		return fmt.Errorf("open audit log: %w", err)
	}
	return damaged(path, fmt.Errorf("not readable as a bbolt file: %w", err))
}

// damaged is the error for a file whose structure is damaged.
func damaged(path string, cause error) error {
	return fmt.Errorf("audit log %s is %w (%w); move it aside and restart to start a new log, and inspect the damaged one with `bbolt check %s`", path, ErrDamaged, cause, path)
}

// panicError is a panic of bbolt, or a memory fault in its mapping, turned
// into an error by protect.
type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("bbolt panicked reading it: %v", e.v) }

// protect runs fn, which reads the file through bbolt in this goroutine,
// and turns a panic into an error. debug.SetPanicOnFault makes a fault on a
// page past the end of a file truncated under us (SIGBUS) or a wild pointer
// in a damaged page (SIGSEGV) a panic too, instead of a fatal error.
// Recovering is safe because bbolt's View and Update roll their transaction
// back in a deferred call, releasing its locks, as the panic unwinds.
func protect(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{r}
		}
	}()
	return fn()
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

// logState is what Open learns of the log for its mark.
type logState struct {
	id        string
	hasEvents bool
}

// initBuckets creates the buckets and the id of a new file and checks the
// format version of an existing one.
func initBuckets(tx *bolt.Tx) (logState, error) {
	meta, err := createBucket(tx, bucketMeta)
	if err != nil {
		return logState{}, err
	}
	switch v := meta.Get(keyVersion); {
	case v == nil:
		if err := meta.Put(keyVersion, []byte(formatVersion)); err != nil {
			return logState{}, fmt.Errorf("write format version: %w", err)
		}
	case string(v) != formatVersion:
		return logState{}, fmt.Errorf("audit log format version is %q, this build reads %q; it was written by another Warren version", v, formatVersion)
	}
	id := string(meta.Get(keyID))
	if id == "" {
		id = rand.Text()
		if err := meta.Put(keyID, []byte(id)); err != nil {
			return logState{}, fmt.Errorf("write log id: %w", err)
		}
	}
	events, err := createBucket(tx, bucketEvents)
	if err != nil {
		return logState{}, err
	}
	k, _ := events.Cursor().First()
	return logState{id: id, hasEvents: k != nil}, nil
}

// errNotBucket is damage: one of our buckets' entries lost its bucket flag.
var errNotBucket = errors.New("is not a bucket")

func createBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(name)
	if errors.Is(err, bolterrors.ErrIncompatibleValue) {
		return nil, fmt.Errorf("its %q entry %w", name, errNotBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %q: %w", name, err)
	}
	return b, nil
}

// Replaced returns, if Open found that this log replaced another one (its
// mark records another log, or events this one does not hold), one sentence
// saying so for the operator; "" otherwise. It is reported at the first
// Open after the replacement only: the mark then follows the log in place.
func (l *Log) Replaced() string { return l.replaced }

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
		b.FillPercent = fillPercent
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
	if !l.hasEvents.Load() {
		l.markHasEvents()
	}
	return stored, nil
}

// markHasEvents records in the mark, once, that the log has held events,
// so that an empty log in its place is noticed.
func (l *Log) markHasEvents() {
	l.markMu.Lock()
	defer l.markMu.Unlock()
	if l.hasEvents.Load() {
		return
	}
	l.hasEvents.Store(true)
	if err := writeMark(l.path, mark{LogID: l.id, HasEvents: true}); err != nil {
		l.logger.Warn("audit log mark not written; a replaced log may go unnoticed", "path", markPath(l.path), "err", err)
	}
}

// Order is the order of Query's result.
type Order int

const (
	// NewestFirst, the zero Order, returns the newest matching events
	// first: with Limit, the most recent Limit of them.
	NewestFirst Order = iota
	// OldestFirst returns matching events in time order: with Limit, the
	// first Limit of them from Since on.
	OldestFirst
)

// Query selects events. Zero fields do not filter.
type Query struct {
	Since time.Time // events at or after Since
	Until time.Time // events before Until

	// Exact matches on the event's fields.
	SessionID, User, Resource string

	// Order is NewestFirst unless set; ties in time are in Seq order,
	// reversed for NewestFirst.
	Order Order
	// Limit caps the result; 0 means DefaultLimit.
	Limit int
}

// Result is what Query found.
type Result struct {
	Events []Event
	// Truncated says that more events matched than Limit: the result
	// holds the newest (or, OldestFirst, the oldest) of them.
	Truncated bool
	// Skipped counts the records in the scanned window that could not be
	// decoded; they are left out of Events whether they matched or not.
	Skipped int
	// SkippedKeys describes the first MaxSkippedKeys of them.
	SkippedKeys []string
}

func (r *Result) skip(k []byte) {
	r.Skipped++
	if len(r.SkippedKeys) < MaxSkippedKeys {
		r.SkippedKeys = append(r.SkippedKeys, describeKey(k))
	}
}

// Query returns the events matching q in q.Order, at most q.Limit of them.
// A record that does not decode is skipped and counted in the Result; a
// damaged file is an error wrapping ErrDamaged.
func (l *Log) Query(q Query) (Result, error) {
	if q.Limit < 0 {
		return Result{}, fmt.Errorf("query audit log: limit %d is negative", q.Limit)
	}
	if q.Order != NewestFirst && q.Order != OldestFirst {
		return Result{}, fmt.Errorf("query audit log: order %d is unknown", q.Order)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return Result{}, fmt.Errorf("query audit log: until %v is before since %v", q.Until, q.Since)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	if q.Since.After(maxTime) {
		return Result{}, nil
	}
	// The window is the keys in [lo, hi); hi nil means no end.
	lo := make([]byte, 16)
	if q.Since.After(time.Unix(0, 0)) {
		lo = eventKey(q.Since, 0)
	}
	var hi []byte
	if !q.Until.IsZero() {
		switch {
		case q.Until.Before(time.Unix(0, 0)):
			return Result{}, nil
		case !q.Until.After(maxTime):
			hi = eventKey(q.Until, 0)
		}
	}

	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return Result{}, ErrClosed
	}
	var res Result
	err := protect(func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			res = Result{} // set afresh: nothing of a failed scan leaks out
			b := tx.Bucket(bucketEvents)
			if b == nil {
				return errors.New(`its "events" bucket is missing`)
			}
			c := b.Cursor()
			var k, v []byte
			var next func() ([]byte, []byte)
			inWindow := func(k []byte) bool { return hi == nil || bytes.Compare(k, hi) < 0 }
			if q.Order == NewestFirst {
				next, inWindow = c.Prev, func(k []byte) bool { return bytes.Compare(k, lo) >= 0 }
				switch {
				case hi == nil:
					k, v = c.Last()
				default:
					if k, _ = c.Seek(hi); k == nil {
						k, v = c.Last()
					} else {
						k, v = c.Prev()
					}
				}
			} else {
				next = c.Next
				k, v = c.Seek(lo)
			}
			for ; k != nil && inWindow(k); k, v = next() {
				var ev Event
				if len(k) != 16 || json.Unmarshal(v, &ev) != nil {
					res.skip(k)
					continue
				}
				if !q.matches(ev) {
					continue
				}
				if len(res.Events) == limit {
					res.Truncated = true
					break
				}
				res.Events = append(res.Events, ev)
			}
			return nil
		})
	})
	if err != nil {
		return Result{}, fmt.Errorf("query audit log: %w", damaged(l.path, err))
	}
	return res, nil
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

// describeKey names a key for an operator: its seq and time if it has the
// 16 bytes of an event key, else its bytes in hex.
func describeKey(k []byte) string {
	if len(k) != 16 {
		return fmt.Sprintf("key %x (%d bytes, not an event key)", k[:min(len(k), 32)], len(k))
	}
	t := time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC()
	return fmt.Sprintf("seq %d at %s", binary.BigEndian.Uint64(k[8:]), t.Format(time.RFC3339Nano))
}
