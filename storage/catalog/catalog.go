// Package catalog keeps a proxy's route and heartbeat state in Pebble: one
// record per agent (which proxy holds its tunnel) and one per (resource,
// agent) pair as last heartbeated. A restarted proxy loads it to serve its
// last-known view at once while it revalidates.
//
// # Layout
//
// Keys are short ASCII prefixes followed by names; values are JSON.
//
//	m/version               format version of the directory ("1")
//	a/<agent>               model.Agent (as agentRecord)
//	r/<name> NUL <agent>    model.Resource (as resourceRecord)
//	x/<agent> NUL <name>    empty: index of an agent's resources, so that
//	                        DeleteAgent need not scan the whole catalog
//
// Names and agent IDs are any non-empty bytes except NUL, so NUL separates
// the parts of a key and resource keys sort by (name, agent). The key, not
// the JSON value, is authoritative for a record's names, since JSON cannot
// carry bytes that are not UTF-8. Every batch that writes or deletes an r/
// key does the same to its x/ key, so the two never disagree. A directory
// written in another format version is refused at Open rather than misread.
//
// # Durability
//
// Every write is durable when it returns: it is in Pebble's write-ahead log
// and the log is fsync'd, so it survives a crash of the process (kill -9, a
// panic, the OOM killer) and of the machine. Pebble commits concurrent
// synced writes with one fsync; a caller with many records to write (a
// router persisting a sweep) should pass them in one call (PutAgents,
// PutResources), which is one batch and one fsync.
//
// Options.NoSync trades that for speed, for a caller whose every record is
// rewritten by the next heartbeat anyway. Its writes then return before they
// reach the file: Pebble keeps the tail of its write-ahead log (up to one
// 32 KiB block) in memory until the block fills or a synced write (PutConfig
// is always synced) flushes it, so a crash of the process loses every
// agent and resource write since the last synced write, and a crash of the
// machine may lose more, what the OS had not yet written back.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// formatVersion is the layout described in the package comment.
const formatVersion = "1"

var (
	// ErrClosed is returned by calls on a Store after Close.
	ErrClosed = errors.New("catalog is closed")
	// ErrInUse is returned by Open when another Store, in this process or
	// another, holds the directory.
	ErrInUse = errors.New("in use by another process")
	// ErrCorrupt is returned when a stored record cannot be decoded; the
	// error names the record's key.
	ErrCorrupt = errors.New("corrupt record")
)

// The records are stored as the JSON of these types, the catalog's own:
// the API takes and returns model.Resource and model.Agent and converts at
// the edge, so that a change to the vocabulary cannot change the format on
// disk unnoticed (a conversion between the two stops compiling).

// resourceRecord is the stored form of a model.Resource.
type resourceRecord struct {
	Name     string            `json:"name"`
	AgentID  string            `json:"agent_id"`
	Kind     string            `json:"kind"`           // "ssh" or "tcp"
	Port     int               `json:"port,omitempty"` // a tcp resource's upstream port
	Labels   map[string]string `json:"labels,omitempty"`
	Healthy  bool              `json:"healthy"`
	Detail   string            `json:"detail,omitempty"` // health detail
	ProxyID  string            `json:"proxy_id"`         // proxy holding the agent's tunnel
	LastSeen time.Time         `json:"last_seen"`
	Expires  time.Time         `json:"expires"` // LastSeen + heartbeat TTL
}

// agentRecord is the stored form of a model.Agent.
type agentRecord struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname,omitempty"`
	Version   string    `json:"version,omitempty"`
	ProxyID   string    `json:"proxy_id"`
	Addr      string    `json:"addr,omitempty"`     // remote address of the tunnel
	HostKey   string    `json:"host_key,omitempty"` // the agent's plain SSH host key, authorized_keys format
	Connected time.Time `json:"connected"`
	LastSeen  time.Time `json:"last_seen"`
}

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Logger receives Pebble's messages: informational ones at debug level,
	// errors at error level. Nil means slog.Default().
	Logger *slog.Logger
	// NoSync makes agent and resource writes (PutAgent, PutAgents,
	// PutResources, the deletes) return before they are on disk: a crash
	// of the process loses those written since the last synced write, a
	// crash of the machine may lose more (see the package comment). Set it
	// only for records that the next heartbeats rewrite. Configuration
	// writes (PutConfig) are synced regardless.
	NoSync bool
}

// Store is a catalog open on one directory. It is safe for concurrent use.
type Store struct {
	dir  string
	wo   *pebble.WriteOptions // of agent and resource writes: pebble.Sync unless Options.NoSync
	db   *pebble.DB
	lock *pebble.Lock

	// mu orders whole operations; Pebble itself needs no lock. Blind writes
	// and reads hold it shared and run in parallel. DeleteAgent and
	// DeleteSeenBefore read and then write, so they hold it exclusively: no
	// write lands between their read and their commit. Close holds it
	// exclusively so that no call reaches a closed DB.
	mu     sync.RWMutex
	closed bool // guarded by mu
}

// Open opens the catalog in dir, creating dir (mode 0700) and an empty
// catalog if needed.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open catalog: directory is empty; set the proxy's data directory")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("dir", dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open catalog: %w", err)
	}

	// Take the directory lock ourselves so that a second opener gets a
	// clear error instead of Pebble's bare "resource temporarily
	// unavailable". Failing to create the LOCK file is a path error; any
	// other failure is the lock being held.
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("open catalog: lock %s: %w", dir, err)
		}
		return nil, fmt.Errorf("open catalog: directory %s is %w (%v); stop the other warren process or choose another data directory", dir, ErrInUse, err)
	}
	db, err := pebble.Open(dir, &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		Lock:               lock,
		Logger:             pebbleLogger{logger},
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open catalog %s: %w", dir, err)
	}
	s := &Store{dir: dir, wo: pebble.Sync, db: db, lock: lock}
	if opts.NoSync {
		s.wo = pebble.NoSync
	}
	if err := s.checkVersion(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open catalog %s: %w", dir, err)
	}
	return s, nil
}

// checkVersion stamps a new catalog with formatVersion and refuses one
// written in another format.
func (s *Store) checkVersion() error {
	v, closer, err := s.db.Get([]byte(keyVersion))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set([]byte(keyVersion), []byte(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("write format version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read format version: %w", err)
	}
	defer closer.Close()
	if string(v) != formatVersion {
		return fmt.Errorf("catalog format version is %q, this build reads %q; it was written by another Warren version", v, formatVersion)
	}
	return nil
}

// Close closes the catalog. Calls after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	err := s.db.Close()
	if lerr := s.lock.Close(); lerr != nil && err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close catalog %s: %w", s.dir, err)
	}
	return nil
}

// pebbleLogger routes Pebble's printf-style messages to slog. Pebble logs
// routine events at info level; Warren keeps them at debug.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("pebble", "detail", fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble", "detail", fmt.Sprintf(format, args...))
}

// Fatalf must not return: Pebble calls it when continuing could corrupt the
// store. Panicking, rather than exiting as Pebble's default logger does,
// keeps the stack and lets tests see it.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("pebble fatal", "detail", msg)
	panic("pebble: " + msg)
}
