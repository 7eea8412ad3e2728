// Package config is the cluster's replicated configuration: small, rarely
// written entries (dynamic resource definitions) that every proxy holds in
// full and any proxy can serve when the others are gone.
//
// Each entry is a last-writer-wins register. Its version is a hybrid
// logical clock timestamp (wall time, a logical counter, the writing
// proxy's id as the tie-break), so versions follow real time when clocks
// agree and stay ordered when they do not. A delete is a tombstone with a
// version like any write, so a late or replayed write never brings a
// deleted entry back. Merging is commutative, associative and idempotent:
// proxies converge whatever order updates arrive in.
package config

import (
	"sort"
	"sync"
	"time"
)

// Version orders writes: by wall time, then logical counter, then node.
type Version struct {
	Wall    int64
	Logical uint32
	Node    string
}

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	if v.Wall != w.Wall {
		return v.Wall < w.Wall
	}
	if v.Logical != w.Logical {
		return v.Logical < w.Logical
	}
	return v.Node < w.Node
}

// Clock is a hybrid logical clock.
type Clock struct {
	node string
	now  func() time.Time

	mu   sync.Mutex // guards last
	last Version
}

// NewClock returns a clock for node; now defaults to time.Now.
func NewClock(node string, now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{node: node, now: now}
}

// Now returns a version newer than every version the clock has issued or
// observed.
func (c *Clock) Now() Version {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := c.now().UnixNano()
	if wall > c.last.Wall {
		c.last = Version{Wall: wall, Node: c.node}
	} else {
		c.last = Version{Wall: c.last.Wall, Logical: c.last.Logical + 1, Node: c.node}
	}
	return c.last
}

// Observe moves the clock past a version seen from another node.
func (c *Clock) Observe(v Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last.Less(v) {
		c.last = Version{Wall: v.Wall, Logical: v.Logical, Node: c.node}
	}
}

// Entry is one register.
type Entry struct {
	Key     string
	Value   []byte // nil for a tombstone
	Deleted bool
	Version Version
}

// Table holds entries. It is not safe for concurrent use.
type Table struct {
	entries map[string]Entry
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{entries: map[string]Entry{}} }

// Merge applies e if it is newer than what the table holds; it reports
// whether the table changed.
func (t *Table) Merge(e Entry) bool {
	cur, ok := t.entries[e.Key]
	if ok && !cur.Version.Less(e.Version) {
		return false
	}
	t.entries[e.Key] = e
	return true
}

// Get returns a live entry.
func (t *Table) Get(key string) (Entry, bool) {
	e, ok := t.entries[key]
	if !ok || e.Deleted {
		return Entry{}, false
	}
	return e, true
}

// All returns every entry, tombstones included, sorted by key.
func (t *Table) All() []Entry {
	out := make([]Entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Live returns the entries that are not deleted, sorted by key.
func (t *Table) Live() []Entry {
	var out []Entry
	for _, e := range t.All() {
		if !e.Deleted {
			out = append(out, e)
		}
	}
	return out
}

// PruneTombstones forgets tombstones older than cutoff (every proxy has
// long seen them by then).
func (t *Table) PruneTombstones(cutoff time.Time) int {
	n := 0
	for k, e := range t.entries {
		if e.Deleted && e.Version.Wall < cutoff.UnixNano() {
			delete(t.entries, k)
			n++
		}
	}
	return n
}
