package bench

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// holdEvent is where one agent's tunnels were, from at on: the proxies'
// ids, sorted.
type holdEvent struct {
	at  time.Time
	ids []string
}

// fleetEvents follows the event lines of the fleets' logs as they are
// written.
type fleetEvents struct {
	mu      sync.Mutex             // guards the fields below
	history map[string][]holdEvent // agent name → its changes, oldest first
	region  map[string]string      // agent name → its fleet's region
	up      map[string]int         // fleet region → its last "up N"
	failed  []string               // "failed NAME: ERR" lines
}

func newFleetEvents() *fleetEvents {
	return &fleetEvents{history: map[string][]holdEvent{}, region: map[string]string{}, up: map[string]int{}}
}

// follow reads path, written by region's fleet, until ctx ends.
func (e *fleetEvents) follow(ctx context.Context, region, path string) {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil && !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial string
	for {
		line, err := r.ReadString('\n')
		if err == nil {
			e.parse(region, partial+strings.TrimSuffix(line, "\n"))
			partial = ""
			continue
		}
		partial += line
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// parse takes one line of region's fleet.
func (e *fleetEvents) parse(region, line string) {
	fs := strings.Fields(line)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case len(fs) == 4 && fs[0] == "proxies":
		ns, err := strconv.ParseInt(fs[3], 10, 64)
		if err != nil {
			return
		}
		var ids []string
		if fs[2] != "-" {
			ids = strings.Split(fs[2], ",")
		}
		e.history[fs[1]] = append(e.history[fs[1]], holdEvent{time.Unix(0, ns), ids})
		e.region[fs[1]] = region
	case len(fs) == 2 && fs[0] == "up":
		e.up[region], _ = strconv.Atoi(fs[1])
	case len(fs) >= 2 && fs[0] == "failed":
		e.failed = append(e.failed, line)
	}
}

// agents returns the names of region's agents that reported, sorted.
func (e *fleetEvents) agents(region string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for name, r := range e.region {
		if r == region {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// at returns where agent's tunnels were at t.
func (e *fleetEvents) at(agent string, t time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for _, h := range e.history[agent] {
		if h.at.After(t) {
			break
		}
		ids = h.ids
	}
	return ids
}

// since returns agent's changes at or after t, and where its tunnels were
// just before t.
func (e *fleetEvents) since(agent string, t time.Time) (before []string, changes []holdEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.history[agent] {
		if h.at.Before(t) {
			before = h.ids
		} else {
			changes = append(changes, h)
		}
	}
	return before, changes
}

// firstAfter returns how long after t agent's tunnels first satisfied ok
// (0 if they did at t), or -1.
func (e *fleetEvents) firstAfter(agent string, t time.Time, ok func([]string) bool) time.Duration {
	before, changes := e.since(agent, t)
	if ok(before) {
		return 0
	}
	for _, h := range changes {
		if ok(h.ids) {
			return h.at.Sub(t)
		}
	}
	return -1
}
