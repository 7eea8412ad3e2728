package membership

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyCheck is a slog handler that records every record whose keys (its
// logger's and its own) hold one key twice, as in
// "component=gossip component=membership".
type keyCheck struct {
	attrs []slog.Attr
	st    *keyCheckState
}

type keyCheckState struct {
	mu         sync.Mutex
	records    int
	memberlist int // records bridged from memberlist's own log
	dups       []string
}

func (h *keyCheck) Enabled(context.Context, slog.Level) bool { return true }

func (h *keyCheck) Handle(_ context.Context, r slog.Record) error {
	seen := map[string]bool{}
	var dup []string
	line := r.Message
	check := func(a slog.Attr) bool {
		if seen[a.Key] {
			dup = append(dup, a.Key)
		}
		seen[a.Key] = true
		line += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		check(a)
	}
	r.Attrs(check)
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.st.records++
	if strings.HasPrefix(r.Message, "memberlist: ") {
		h.st.memberlist++
	}
	if len(dup) > 0 {
		h.st.dups = append(h.st.dups, fmt.Sprintf("%v twice in: %s", dup, line))
	}
	return nil
}

func (h *keyCheck) WithAttrs(as []slog.Attr) slog.Handler {
	return &keyCheck{attrs: append(append([]slog.Attr(nil), h.attrs...), as...), st: h.st}
}

func (h *keyCheck) WithGroup(string) slog.Handler { return h }

// TestLogKeysAppearOnce gives membership a logger that already names the
// component and the proxy, as the proxy does, and checks that no record,
// ours or memberlist's, repeats a key.
func TestLogKeysAppearOnce(t *testing.T) {
	checkGoroutines(t)
	st := &keyCheckState{}
	withLogger := func(id string) nodeOpt {
		return func(c *Config) {
			c.Logger = slog.New(&keyCheck{st: st}).With("proxy", id, "component", "gossip")
		}
	}
	a := newNode(t, "p1", "127.0.0.1", withLogger("p1")).start(t)
	b := newNode(t, "p2", "127.0.0.2", withLogger("p2"), withSeeds(a.GossipAddr())).start(t)
	a.waitMembers(t, 15*time.Second, "p1", "p2")
	b.waitMembers(t, 15*time.Second, "p1", "p2")
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	a.waitMembers(t, 15*time.Second, "p1")

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.records == 0 || st.memberlist == 0 {
		t.Fatalf("got %d records, %d of them from memberlist; want both kinds, to check their keys", st.records, st.memberlist)
	}
	for _, d := range st.dups {
		t.Errorf("a log key appears twice: %s", d)
	}
}
