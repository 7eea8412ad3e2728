package lint

import (
	"strings"
	"testing"
)

// A room is a directory of the tree; its rule holds for every package in
// and under it, tests included, unless a deeper room has its own rule.
// A package may import any package under its room's directory (the
// compiler refuses cycles); outside it, only what the table allows.
type room struct {
	dir string   // "actors", "bench/plot"
	may []string // rooms (or single packages) it may import besides its own
	why string
}

// rooms is the house's dependency table, from the bottom up.
var rooms = []room{
	{"internal", nil,
		"small helpers anything may use; so they use nothing of ours but each other"},
	{"internal/harness", []string{"transport/pki", "internal"},
		"writes a cluster's files and runs its processes, for tests, warren dev and bench: it needs the cluster identity (transport/pki), and nothing that runs inside a proxy"},
	{"internal/regions", []string{"internal"},
		"runs a multi-region cluster of warren processes in the emulated WAN (internal/wan) with the one harness (internal/harness); it runs the binary, so it imports nothing that runs inside a proxy"},
	{"storage", []string{"internal"},
		"on-disk stores, converting to the vocabulary (internal/model) at their edge; below everything else so a store can be tested, repaired and tooled on its own"},
	{"cluster", []string{"internal"},
		"the cluster's shared state and policy: data and rules, no wires, no disks, no actors"},
	{"transport", []string{"internal"},
		"bytes on wires: protocols that know no actors, no cluster state and no stores"},
	{"actors", []string{"cluster", "storage", "transport", "internal"},
		"actors put the rooms below to work; nothing below knows of actors"},
	{"bench", []string{"actors/agent", "cluster/membership", "transport", "internal"},
		"drives warren processes from outside; the scale fleet runs agents in-process, the gossip scenario the membership layer (its timings, measured alone)"},
	{"bench/plot", nil,
		"draws charts; knows nothing of Warren"},
	{"cmd", []string{"actors/agent", "actors/proxy", "actors/usercmd", "bench", "cluster", "storage", "transport", "internal"},
		"flags and wiring: the assembled proxy and agent, never the actors inside them; the user commands' tables, so the CLI prints what a proxy prints"},
}

// toRemove are imports that break the table today, each allowed here
// until it is gone. TO REMOVE: the test fails once an entry is no longer
// needed, so that the list only shrinks.
var toRemove = []struct {
	from, to string // packages, as in the table
	why      string
}{}

// roomOf returns the deepest room holding the package at dir.
func roomOf(dir string) *room {
	var best *room
	for i := range rooms {
		r := &rooms[i]
		if within(dir, r.dir) && (best == nil || len(r.dir) > len(best.dir)) {
			best = r
		}
	}
	return best
}

// within reports whether the package at dir is in or under room.
func within(dir, room string) bool {
	return dir == room || strings.HasPrefix(dir, room+"/")
}

// TestDependencies checks every import of the module's own packages
// against the table.
func TestDependencies(t *testing.T) {
	tr := loadTree(t)
	used := make([]bool, len(toRemove))
	for _, p := range tr.pkgs {
		from := roomOf(p.dir)
		if from == nil {
			t.Errorf("package %s is in no room: add a rule for it to rooms in internal/lint/deps_test.go", p.dir)
			continue
		}
		for _, f := range p.files {
			for _, im := range tr.ownImports(p, f) {
				if allowed(from, im.path) {
					continue
				}
				if i := exception(p.dir, im.path); i >= 0 {
					used[i] = true
					continue
				}
				t.Errorf("%s:%d: %s imports %s, which room %q may not import\n\t%s may import: %s (%s)",
					im.file, im.line, p.dir, im.path, from.dir, from.dir, mayList(from), from.why)
			}
		}
	}
	for i, e := range toRemove {
		if !used[i] {
			t.Errorf("%s no longer imports %s: delete that entry from toRemove in internal/lint/deps_test.go", e.from, e.to)
		}
	}
}

func allowed(from *room, target string) bool {
	if within(target, from.dir) {
		return true
	}
	for _, m := range from.may {
		if within(target, m) {
			return true
		}
	}
	return false
}

func exception(dir, target string) int {
	for i, e := range toRemove {
		if dir == e.from && target == e.to {
			return i
		}
	}
	return -1
}

func mayList(r *room) string {
	if len(r.may) == 0 {
		return "nothing outside " + r.dir
	}
	return r.dir + ", " + strings.Join(r.may, ", ")
}

// TestRoomsTable keeps the table itself sound: every room and every
// allowed target names a directory that holds packages.
func TestRoomsTable(t *testing.T) {
	tr := loadTree(t)
	exists := func(dir string) bool {
		for _, p := range tr.pkgs {
			if within(p.dir, dir) {
				return true
			}
		}
		return false
	}
	for _, r := range rooms {
		if !exists(r.dir) {
			t.Errorf("room %s holds no package", r.dir)
		}
		for _, m := range r.may {
			if !exists(m) {
				t.Errorf("room %s may import %s, which holds no package", r.dir, m)
			}
		}
	}
}
