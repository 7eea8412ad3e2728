// Package identity keeps an agent's own identity in a bbolt file: its ID,
// private key, host certificate, the host CA it trusts and the proxies it
// last reached. An agent saves it once it has joined and loads it at every
// start, so it rejoins without a token.
//
// The file holds a private key: it is created with mode 0600 and an existing
// file is tightened to 0600 at Open. Save is durable (fsync'd) before it
// returns.
//
// # Layout
//
// Bucket "identity" maps key "current" to the Identity as JSON. Bucket
// "meta" holds the format version; a file written in another format is
// refused at Open rather than misread.
package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// lockTimeout is how long Open waits for another process to release the
// file's lock.
const lockTimeout = 2 * time.Second

const formatVersion = "1"

var (
	bucketIdentity = []byte("identity")
	bucketMeta     = []byte("meta")
	keyCurrent     = []byte("current")
	keyVersion     = []byte("version")
)

var (
	// ErrClosed is returned by calls on a Store after Close.
	ErrClosed = errors.New("identity store is closed")
	// ErrInUse is returned by Open when another Store, in this process or
	// another, holds the file.
	ErrInUse = errors.New("in use by another process")
	// ErrCorrupt is returned by Load when the saved identity cannot be
	// decoded.
	ErrCorrupt = errors.New("corrupt record")
)

// Identity is what an agent is: the key it proves itself with and the
// certificates that vouch for it.
type Identity struct {
	AgentID    string `json:"agent_id"`
	PrivateKey []byte `json:"private_key"` // OpenSSH PEM
	// ECDSAKey is a second host key (OpenSSH PEM, ECDSA P-256) the agent's
	// SSH server offers plain, for clients that cannot use Ed25519.
	ECDSAKey  []byte    `json:"ecdsa_key,omitempty"`
	HostCert  []byte    `json:"host_cert"`         // authorized_keys format
	HostCA    []byte    `json:"host_ca"`           // authorized_keys format of the cluster host CA this agent trusts
	UserCA    []byte    `json:"user_ca"`           // authorized_keys format of the cluster user CA the agent's SSH server trusts
	Proxies   []string  `json:"proxies,omitempty"` // last known proxy tunnel addresses
	JoinedAt  time.Time `json:"joined_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Store is an identity file. It is safe for concurrent use.
type Store struct {
	path string
	db   *bolt.DB

	// mu is held shared by every call in flight and exclusively by Close,
	// so Close waits for them and no call reaches a closed DB.
	mu     sync.RWMutex
	closed bool // guarded by mu
}

// Open opens the identity file at path, creating it (mode 0600) and its
// directory (mode 0700) if needed. If another process holds the file, Open
// fails with ErrInUse after 2 seconds.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open identity: path is empty; set the agent's identity file")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open identity: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("identity file %s is %w (waited %v for its lock); is another warren agent running with it?", path, ErrInUse, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open identity %s: %w", path, err)
	}
	// bbolt creates new files 0600, but an existing one may have been
	// created or copied looser; the private key must not stay readable.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open identity: %w", err)
	}
	if err := db.Update(initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("open identity %s: %w", path, err)
	}
	return &Store{path: path, db: db}, nil
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
		return fmt.Errorf("identity format version is %q, this build reads %q; it was written by another Warren version", v, formatVersion)
	}
	if _, err := tx.CreateBucketIfNotExists(bucketIdentity); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

// Close closes the file. Calls after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close identity %s: %w", s.path, err)
	}
	return nil
}

// Load returns the saved identity, or false if none has been saved yet.
func (s *Store) Load() (Identity, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Identity{}, false, ErrClosed
	}
	var (
		id    Identity
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIdentity).Get(keyCurrent)
		if v == nil {
			return nil
		}
		found = true
		if err := json.Unmarshal(v, &id); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil
	})
	if err != nil {
		return Identity{}, false, fmt.Errorf("load identity from %s: %w", s.path, err)
	}
	return id, found, nil
}

// Save replaces the saved identity with id and returns once it is fsync'd.
// AgentID and PrivateKey are required. Times are stored in UTC.
func (s *Store) Save(id Identity) error {
	var missing []string
	if id.AgentID == "" {
		missing = append(missing, "agent ID")
	}
	if len(id.PrivateKey) == 0 {
		missing = append(missing, "private key")
	}
	if len(missing) > 0 {
		return fmt.Errorf("save identity: no %s", strings.Join(missing, " and "))
	}
	id.JoinedAt, id.UpdatedAt = id.JoinedAt.UTC(), id.UpdatedAt.UTC()
	v, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("save identity: encode: %w", err)
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIdentity).Put(keyCurrent, v)
	})
	if err != nil {
		return fmt.Errorf("save identity to %s: %w", s.path, err)
	}
	return nil
}
