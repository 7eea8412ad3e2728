package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/warren-proxy/warren/internal/model"
)

const (
	keyVersion     = "m/version"
	prefixAgent    = "a/"
	prefixResource = "r/"
	prefixIndex    = "x/"
)

func agentKey(id string) []byte {
	return append([]byte(prefixAgent), id...)
}

func resourceKey(name, agentID string) []byte {
	return pairKey(prefixResource, name, agentID)
}

func indexKey(agentID, name string) []byte {
	return pairKey(prefixIndex, agentID, name)
}

func pairKey(prefix, a, b string) []byte {
	k := make([]byte, 0, len(prefix)+len(a)+1+len(b))
	k = append(k, prefix...)
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// splitPair splits the part of a pair key after its prefix.
func splitPair(k []byte) (a, b string, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

// prefixEnd is the smallest key after every key starting with prefix, which
// ends in '/' for all of ours.
func prefixEnd(prefix string) []byte {
	end := []byte(prefix)
	end[len(end)-1]++
	return end
}

// checkName reports why s cannot be part of a key.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s %q contains a NUL byte", what, s)
	}
	return nil
}

func checkResource(r model.Resource) error {
	if err := checkName("resource name", r.Name); err != nil {
		return err
	}
	return checkName("agent ID", r.AgentID)
}

// newBatch returns a batch to fill and commit. It is not indexed, so its
// Set and Delete cannot fail and their errors are not checked.
func (s *Store) newBatch() *pebble.Batch { return s.db.NewBatch() }

func corrupt(key []byte, err error) error {
	return fmt.Errorf("catalog record %q: %w: %w", key, ErrCorrupt, err)
}

// PutResources writes rs in one atomic batch, replacing any earlier record
// for the same (Name, AgentID). Times are stored in UTC.
func (s *Store) PutResources(rs ...model.Resource) error {
	for i, r := range rs {
		if err := checkResource(r); err != nil {
			return fmt.Errorf("put resources: resource %d: %w", i, err)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	for _, r := range rs {
		r.LastSeen, r.Expires = r.LastSeen.UTC(), r.Expires.UTC()
		v, err := json.Marshal(resourceRecord(r))
		if err != nil {
			return fmt.Errorf("put resources: encode %q: %w", r.Name, err)
		}
		b.Set(resourceKey(r.Name, r.AgentID), v, nil)
		b.Set(indexKey(r.AgentID, r.Name), nil, nil)
	}
	if err := b.Commit(s.wo); err != nil {
		return fmt.Errorf("put resources: %w", err)
	}
	return nil
}

// DeleteResources deletes agentID's records for names in one atomic batch.
// Names it does not hold are ignored.
func (s *Store) DeleteResources(agentID string, names ...string) error {
	if err := checkName("agent ID", agentID); err != nil {
		return fmt.Errorf("delete resources: %w", err)
	}
	for _, n := range names {
		if err := checkName("resource name", n); err != nil {
			return fmt.Errorf("delete resources: %w", err)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	for _, n := range names {
		b.Delete(resourceKey(n, agentID), nil)
		b.Delete(indexKey(agentID, n), nil)
	}
	if err := b.Commit(s.wo); err != nil {
		return fmt.Errorf("delete resources of %q: %w", agentID, err)
	}
	return nil
}

// PutAgent writes a's record, replacing any earlier one. Times are stored in
// UTC.
func (s *Store) PutAgent(a model.Agent) error { return s.PutAgents(a) }

// PutAgents writes the agents' records in one atomic batch, replacing any
// earlier ones, so that persisting many agents costs one fsync rather than
// one each. Times are stored in UTC.
func (s *Store) PutAgents(as ...model.Agent) error {
	for i, a := range as {
		if err := checkName("agent ID", a.ID); err != nil {
			return fmt.Errorf("put agent: agent %d: %w", i, err)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	for _, a := range as {
		a.Connected, a.LastSeen = a.Connected.UTC(), a.LastSeen.UTC()
		v, err := json.Marshal(agentRecord(a))
		if err != nil {
			return fmt.Errorf("put agent %q: encode: %w", a.ID, err)
		}
		b.Set(agentKey(a.ID), v, nil)
	}
	if err := b.Commit(s.wo); err != nil {
		return fmt.Errorf("put agents: %w", err)
	}
	return nil
}

// DeleteAgent deletes the agent's record and all its resources in one atomic
// batch. An unknown id is not an error.
func (s *Store) DeleteAgent(id string) error {
	if err := checkName("agent ID", id); err != nil {
		return fmt.Errorf("delete agent: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	b.Delete(agentKey(id), nil)

	lower := indexKey(id, "") // "x/<id>\x00"
	upper := append(bytes.Clone(lower[:len(lower)-1]), 1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("delete agent %q: %w", id, err)
	}
	for it.First(); it.Valid(); it.Next() {
		name := string(it.Key()[len(lower):])
		b.Delete(resourceKey(name, id), nil)
		b.Delete(indexKey(id, name), nil)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("delete agent %q: list resources: %w", id, err)
	}
	if err := b.Commit(s.wo); err != nil {
		return fmt.Errorf("delete agent %q: %w", id, err)
	}
	return nil
}

// Load returns every agent sorted by ID and every resource sorted by (Name,
// AgentID), all from one consistent snapshot. A record that cannot be decoded
// fails the whole load with an error wrapping ErrCorrupt that names its key.
func (s *Store) Load() (agents []model.Agent, resources []model.Resource, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, nil, ErrClosed
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	err = scan(snap, prefixAgent, func(k, v []byte) error {
		a, err := decodeAgent(k, v)
		if err != nil {
			return err
		}
		agents = append(agents, a)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load catalog: %w", err)
	}
	err = scan(snap, prefixResource, func(k, v []byte) error {
		r, err := decodeResource(k, v)
		if err != nil {
			return err
		}
		resources = append(resources, r)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load catalog: %w", err)
	}
	return agents, resources, nil
}

// DeleteSeenBefore deletes every agent and every resource whose own LastSeen
// is before cutoff, in one atomic batch, and returns how many records it
// deleted. An agent's resources are judged by their own LastSeen, not the
// agent's.
func (s *Store) DeleteSeenBefore(cutoff time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	b := s.newBatch()
	defer b.Close()
	n := 0
	err := scan(s.db, prefixAgent, func(k, v []byte) error {
		a, err := decodeAgent(k, v)
		if err != nil {
			return err
		}
		if a.LastSeen.Before(cutoff) {
			b.Delete(k, nil)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune catalog: %w", err)
	}
	err = scan(s.db, prefixResource, func(k, v []byte) error {
		r, err := decodeResource(k, v)
		if err != nil {
			return err
		}
		if r.LastSeen.Before(cutoff) {
			b.Delete(k, nil)
			b.Delete(indexKey(r.AgentID, r.Name), nil)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune catalog: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := b.Commit(s.wo); err != nil {
		return 0, fmt.Errorf("prune catalog: %w", err)
	}
	return n, nil
}

// reader is what scan needs of a *pebble.DB or *pebble.Snapshot.
type reader interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// scan calls fn for each key with prefix, in key order, until fn fails. The
// slices passed to fn are valid only during the call.
func scan(r reader, prefix string, fn func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), v)
		}
		if err != nil {
			return errors.Join(err, it.Close())
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// The key, not the JSON, is authoritative for names: a name may hold bytes
// that are not UTF-8, which JSON cannot carry and replaces.

func decodeAgent(k, v []byte) (model.Agent, error) {
	var rec agentRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return model.Agent{}, corrupt(k, err)
	}
	a := model.Agent(rec)
	a.ID = string(k[len(prefixAgent):])
	return a, nil
}

func decodeResource(k, v []byte) (model.Resource, error) {
	name, agentID, ok := splitPair(k[len(prefixResource):])
	if !ok {
		return model.Resource{}, corrupt(k, errors.New("key has no agent part"))
	}
	var rec resourceRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return model.Resource{}, corrupt(k, err)
	}
	r := model.Resource(rec)
	r.Name, r.AgentID = name, agentID
	return r, nil
}
