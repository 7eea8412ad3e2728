package catalog

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// prefixConfig holds the cluster configuration: "c/<key>" → ConfigEntry.
const prefixConfig = "c/"

// ConfigEntry is one register of the replicated cluster configuration,
// stored as the cluster layer gives it (storage does not interpret it).
type ConfigEntry struct {
	Key     string `json:"key"`
	Value   []byte `json:"value,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	Wall    int64  `json:"wall"`
	Logical uint32 `json:"logical,omitempty"`
	Node    string `json:"node"`
}

// PutConfig writes configuration entries in one batch, durably whatever
// Options.NoSync says: a proxy that acknowledged a write must still hold it
// after a crash.
func (s *Store) PutConfig(entries ...ConfigEntry) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	for _, e := range entries {
		if err := checkName("config key", e.Key); err != nil {
			return fmt.Errorf("put config: %w", err)
		}
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("put config %q: encode: %w", e.Key, err)
		}
		if err := b.Set(append([]byte(prefixConfig), e.Key...), v, nil); err != nil {
			return fmt.Errorf("put config %q: %w", e.Key, err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("put config: %w", err)
	}
	return nil
}

// LoadConfig returns every configuration entry, tombstones included, in
// key order.
func (s *Store) LoadConfig() ([]ConfigEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []ConfigEntry
	err := scan(s.db, prefixConfig, func(k, v []byte) error {
		var e ConfigEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("%w: config record %q: %v", ErrCorrupt, k, err)
		}
		e.Key = string(k[len(prefixConfig):])
		out = append(out, e)
		return nil
	})
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return out, err
}
