package catalog_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/catalog"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)

func open(t testing.TB, dir string) *catalog.Store {
	t.Helper()
	s, err := catalog.Open(dir, catalog.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// openTemp opens a catalog in a fresh directory and closes it at the end of
// the test, checking that Pebble left no goroutine behind.
func openTemp(t *testing.T) *catalog.Store {
	t.Helper()
	s := open(t, t.TempDir())
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, catalog.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
		checkNoPebbleGoroutines(t)
	})
	return s
}

func checkNoPebbleGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "cockroachdb/pebble") {
			return
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting for one
	}
	t.Errorf("pebble goroutines still running after Close:\n%s", stacks)
}

func res(name, agent string, seen time.Time) model.Resource {
	return model.Resource{
		Name: name, AgentID: agent, Kind: "ssh", ProxyID: "proxy-1",
		Healthy: true, LastSeen: seen, Expires: seen.Add(30 * time.Second),
	}
}

func load(t *testing.T, s *catalog.Store) ([]model.Agent, []model.Resource) {
	t.Helper()
	agents, resources, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return agents, resources
}

// keys names resources as "name@agent", in Load's order.
func keys(rs []model.Resource) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Name+"@"+r.AgentID)
	}
	return out
}

func agentIDs(as []model.Agent) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func TestReopenReadsBack(t *testing.T) {
	dir := t.TempDir()
	wantAgents := []model.Agent{
		{ID: "agent-1", Hostname: "db1", Version: "0.1.0", ProxyID: "proxy-1", Addr: "10.0.0.5:41234", Connected: t0, LastSeen: t0.Add(time.Minute)},
		{ID: "agent-2", ProxyID: "proxy-2", Connected: t0, LastSeen: t0},
	}
	r1 := res("db", "agent-1", t0)
	r1.Labels = map[string]string{"env": "prod", "team": "data"}
	r1.Healthy, r1.Detail = false, "sshd not answering"
	r2 := res("web", "agent-2", t0)
	r2.Kind = "tcp"
	// Names may hold any byte but NUL, including ones that sort oddly.
	r3 := res("db\xff/é", "agent-1", t0)
	wantResources := []model.Resource{r1, r3, r2}

	s := open(t, dir)
	for _, a := range wantAgents {
		if err := s.PutAgent(a); err != nil {
			t.Fatalf("PutAgent: %v", err)
		}
	}
	if err := s.PutResources(r2, r3, r1); err != nil {
		t.Fatalf("PutResources: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	agents, resources := load(t, s)
	if !reflect.DeepEqual(agents, wantAgents) {
		t.Errorf("agents after reopen:\ngot  %+v\nwant %+v", agents, wantAgents)
	}
	if !reflect.DeepEqual(resources, wantResources) {
		t.Errorf("resources after reopen:\ngot  %+v\nwant %+v", resources, wantResources)
	}
}

// TestNoSyncWrites checks that the NoSync mode still stores what a clean
// Close flushes; what a crash loses in it is TestCrashNoSync's subject.
func TestNoSyncWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := catalog.Open(dir, catalog.Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.PutResources(res("db", "a1", t0)); err != nil {
		t.Fatalf("PutResources: %v", err)
	}
	if err := s.PutAgents(model.Agent{ID: "a1", LastSeen: t0}, model.Agent{ID: "a2", LastSeen: t0}); err != nil {
		t.Fatalf("PutAgents: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t, dir)
	defer s.Close()
	if as, rs := load(t, s); len(rs) != 1 || len(as) != 2 {
		t.Errorf("got %d agents and %d resources after reopen, want 2 and 1", len(as), len(rs))
	}
}

func TestPutAgents(t *testing.T) {
	s := openTemp(t)
	local := t0.In(time.FixedZone("X", 3*3600))
	if err := s.PutAgents(model.Agent{ID: "b", ProxyID: "p1", LastSeen: local}, model.Agent{ID: "a", ProxyID: "p1"}); err != nil {
		t.Fatalf("PutAgents: %v", err)
	}
	// A batch with an invalid ID writes nothing.
	err := s.PutAgents(model.Agent{ID: "c"}, model.Agent{ID: ""})
	if want := "agent 1: agent ID is empty"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got error %v, want one containing %q", err, want)
	}
	// Replaces, as PutAgent does.
	if err := s.PutAgents(model.Agent{ID: "a", ProxyID: "p2"}); err != nil {
		t.Fatalf("PutAgents: %v", err)
	}
	agents, _ := load(t, s)
	if got, want := agentIDs(agents), []string{"a", "b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got agents %q, want %q", got, want)
	}
	if agents[0].ProxyID != "p2" || !agents[1].LastSeen.Equal(t0) || agents[1].LastSeen.Location() != time.UTC {
		t.Errorf("got %+v, want a on p2 and b last seen %v in UTC", agents, t0)
	}
}

func TestLocalTimesStoredUTC(t *testing.T) {
	s := openTemp(t)
	local := t0.In(time.FixedZone("X", 3*3600))
	if err := s.PutResources(res("db", "a1", local)); err != nil {
		t.Fatal(err)
	}
	_, rs := load(t, s)
	if got := rs[0].LastSeen; !got.Equal(t0) || got.Location() != time.UTC {
		t.Errorf("got LastSeen %v, want %v", got, t0)
	}
}

func TestResourcesBatch(t *testing.T) {
	seed := []model.Resource{
		res("a", "agent-1", t0), res("b", "agent-1", t0), res("c", "agent-1", t0),
		res("a", "agent-2", t0), res("b", "agent-2", t0),
	}
	tests := []struct {
		name    string
		agent   string
		deletes []string
		want    []string
	}{
		{"none", "agent-1", nil, []string{"a@agent-1", "a@agent-2", "b@agent-1", "b@agent-2", "c@agent-1"}},
		{"one", "agent-1", []string{"b"}, []string{"a@agent-1", "a@agent-2", "b@agent-2", "c@agent-1"}},
		{"several", "agent-1", []string{"a", "c"}, []string{"a@agent-2", "b@agent-1", "b@agent-2"}},
		{"other agent only", "agent-2", []string{"a", "b"}, []string{"a@agent-1", "b@agent-1", "c@agent-1"}},
		{"unknown names ignored", "agent-1", []string{"zz", "a"}, []string{"a@agent-2", "b@agent-1", "b@agent-2", "c@agent-1"}},
		{"unknown agent", "agent-9", []string{"a"}, []string{"a@agent-1", "a@agent-2", "b@agent-1", "b@agent-2", "c@agent-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t)
			if err := s.PutResources(seed...); err != nil {
				t.Fatalf("PutResources: %v", err)
			}
			if err := s.DeleteResources(tt.agent, tt.deletes...); err != nil {
				t.Fatalf("DeleteResources: %v", err)
			}
			_, rs := load(t, s)
			if got := keys(rs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPutResourcesReplaces(t *testing.T) {
	s := openTemp(t)
	if err := s.PutResources(res("db", "a1", t0)); err != nil {
		t.Fatal(err)
	}
	next := res("db", "a1", t0.Add(10*time.Second))
	next.Healthy = false
	if err := s.PutResources(next); err != nil {
		t.Fatal(err)
	}
	_, rs := load(t, s)
	if len(rs) != 1 || !reflect.DeepEqual(rs[0], next) {
		t.Errorf("got %+v, want only %+v", rs, next)
	}
}

func TestDeleteAgentCascades(t *testing.T) {
	s := openTemp(t)
	for _, id := range []string{"a1", "a2", "a10"} {
		if err := s.PutAgent(model.Agent{ID: id, ProxyID: "p1", LastSeen: t0}); err != nil {
			t.Fatal(err)
		}
	}
	// "a1" is a prefix of "a10": deleting a1 must not touch a10's resources.
	err := s.PutResources(
		res("db", "a1", t0), res("web", "a1", t0), res("zz", "a1", t0),
		res("db", "a2", t0), res("db", "a10", t0), res("web", "a10", t0),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAgent("a1"); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	agents, rs := load(t, s)
	if got, want := agentIDs(agents), []string{"a10", "a2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("agents: got %q, want %q", got, want)
	}
	if got, want := keys(rs), []string{"db@a10", "db@a2", "web@a10"}; !reflect.DeepEqual(got, want) {
		t.Errorf("resources: got %q, want %q", got, want)
	}

	// Resources deleted one by one must leave nothing for DeleteAgent to
	// trip on, and a re-registered agent cascades again.
	if err := s.DeleteResources("a10", "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutResources(res("new", "a1", t0)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a10", "a1", "a1", "unknown"} {
		if err := s.DeleteAgent(id); err != nil {
			t.Fatalf("DeleteAgent(%q): %v", id, err)
		}
	}
	agents, rs = load(t, s)
	if got, want := agentIDs(agents), []string{"a2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("agents: got %q, want %q", got, want)
	}
	if got, want := keys(rs), []string{"db@a2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("resources: got %q, want %q", got, want)
	}
}

func TestDeleteSeenBefore(t *testing.T) {
	old, mid, fresh := t0, t0.Add(time.Minute), t0.Add(2*time.Minute)
	tests := []struct {
		name       string
		cutoff     time.Time
		wantN      int
		wantAgents []string
		wantRes    []string
	}{
		{"zero cutoff", time.Time{}, 0, []string{"a-fresh", "a-mid", "a-old"}, []string{"r1@a-fresh", "r1@a-old", "r2@a-mid", "r3@a-old"}},
		{"before all", old, 0, []string{"a-fresh", "a-mid", "a-old"}, []string{"r1@a-fresh", "r1@a-old", "r2@a-mid", "r3@a-old"}},
		{"old only", mid, 2, []string{"a-fresh", "a-mid"}, []string{"r1@a-fresh", "r2@a-mid", "r3@a-old"}},
		{"old and mid", fresh, 4, []string{"a-fresh"}, []string{"r1@a-fresh", "r3@a-old"}},
		{"everything", fresh.Add(time.Hour), 7, []string{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t)
			for id, seen := range map[string]time.Time{"a-old": old, "a-mid": mid, "a-fresh": fresh} {
				if err := s.PutAgent(model.Agent{ID: id, LastSeen: seen}); err != nil {
					t.Fatal(err)
				}
			}
			// r3@a-old was heartbeated recently although its agent record
			// was not: each record is judged by its own LastSeen.
			err := s.PutResources(res("r1", "a-old", old), res("r3", "a-old", fresh.Add(time.Minute)),
				res("r2", "a-mid", mid), res("r1", "a-fresh", fresh))
			if err != nil {
				t.Fatal(err)
			}
			n, err := s.DeleteSeenBefore(tt.cutoff)
			if err != nil {
				t.Fatalf("DeleteSeenBefore: %v", err)
			}
			if n != tt.wantN {
				t.Errorf("got %d deleted, want %d", n, tt.wantN)
			}
			agents, rs := load(t, s)
			if got := agentIDs(agents); !reflect.DeepEqual(got, tt.wantAgents) {
				t.Errorf("agents: got %q, want %q", got, tt.wantAgents)
			}
			if got := keys(rs); !reflect.DeepEqual(got, tt.wantRes) {
				t.Errorf("resources: got %q, want %q", got, tt.wantRes)
			}
			// A pruned resource is gone from the agent index too.
			if err := s.DeleteAgent("a-old"); err != nil {
				t.Fatalf("DeleteAgent: %v", err)
			}
		})
	}
}

func TestInvalidNames(t *testing.T) {
	s := openTemp(t)
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"put empty name", func() error { return s.PutResources(res("ok", "a", t0), res("", "a", t0)) }, "resource 1: resource name is empty"},
		{"put NUL name", func() error { return s.PutResources(res("a\x00b", "a", t0)) }, `resource name "a\x00b" contains a NUL byte`},
		{"put empty agent", func() error { return s.PutResources(res("db", "", t0)) }, "agent ID is empty"},
		{"put NUL agent", func() error { return s.PutResources(res("db", "a\x00", t0)) }, "contains a NUL byte"},
		{"delete empty agent", func() error { return s.DeleteResources("", "db") }, "agent ID is empty"},
		{"delete NUL name", func() error { return s.DeleteResources("a", "db", "\x00") }, "contains a NUL byte"},
		{"put agent empty", func() error { return s.PutAgent(model.Agent{}) }, "agent ID is empty"},
		{"put agent NUL", func() error { return s.PutAgent(model.Agent{ID: "\x00"}) }, "contains a NUL byte"},
		{"delete agent NUL", func() error { return s.DeleteAgent("x\x00y") }, "contains a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
	// A rejected batch writes nothing, not even its valid records.
	if _, rs := load(t, s); len(rs) != 0 {
		t.Errorf("got %d resources after rejected writes, want 0", len(rs))
	}
}

// rawSet writes a key with Pebble directly, as a bug or a bad disk might.
func rawSet(t *testing.T, dir, key, value string) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		t.Fatalf("pebble.Open: %v", err)
	}
	if err := db.Set([]byte(key), []byte(value), pebble.Sync); err != nil {
		t.Fatalf("pebble Set: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("pebble Close: %v", err)
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)           {}
func (quietPebble) Errorf(string, ...any)          {}
func (quietPebble) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

func TestCorruptValue(t *testing.T) {
	tests := []struct {
		name, key, value string
		wantKey          string // as the error must quote it
	}{
		{"resource not JSON", "r/db\x00agent-1", "{not json", `"r/db\x00agent-1"`},
		{"agent not JSON", "a/agent-1", "\x00\x01", `"a/agent-1"`},
		{"resource wrong type", "r/db\x00agent-1", `{"name":"db","agent_id":"agent-1","healthy":"yes"}`, `"r/db\x00agent-1"`},
		{"resource key without agent", "r/db", `{"name":"db"}`, `"r/db"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			if err := s.PutResources(res("aaa", "agent-0", t0)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			rawSet(t, dir, tt.key, tt.value)

			s = open(t, dir)
			defer s.Close()
			_, _, err := s.Load()
			if !errors.Is(err, catalog.ErrCorrupt) || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("Load: got error %v, want ErrCorrupt naming %s", err, tt.wantKey)
			}
			_, err = s.DeleteSeenBefore(t0.Add(time.Hour))
			if !errors.Is(err, catalog.ErrCorrupt) || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("DeleteSeenBefore: got error %v, want ErrCorrupt naming %s", err, tt.wantKey)
			}
			// Deleting the bad record by name is the way out.
			if strings.HasPrefix(tt.key, "a/") {
				err = s.DeleteAgent("agent-1")
			} else {
				err = s.DeleteResources("agent-1", "db")
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.key == "r/db" {
				return // a key no API call can name; only a reset clears it
			}
			if _, rs := load(t, s); len(rs) != 1 {
				t.Errorf("got %d resources after deleting the bad record, want 1", len(rs))
			}
		})
	}
}

func TestFormatVersionMismatch(t *testing.T) {
	dir := t.TempDir()
	open(t, dir).Close()
	rawSet(t, dir, "m/version", "2")
	s, err := catalog.Open(dir, catalog.Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer format succeeded, want an error")
	}
	if !strings.Contains(err.Error(), `format version is "2"`) {
		t.Errorf("got error %v, want one naming the version", err)
	}
}

func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s2, err := catalog.Open(dir, catalog.Options{})
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded, want ErrInUse")
	}
	if !errors.Is(err, catalog.ErrInUse) || !strings.Contains(err.Error(), dir) {
		t.Errorf("got error %v, want ErrInUse naming %s", err, dir)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close releases the lock.
	open(t, dir).Close()
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want string
	}{
		{"empty", "", "directory is empty"},
		{"under a file", filepath.Join(file, "sub"), "open catalog"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := catalog.Open(tt.dir, catalog.Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded, want an error", tt.dir)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	s := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"PutResources":    func() error { return s.PutResources(res("db", "a", t0)) },
		"DeleteResources": func() error { return s.DeleteResources("a", "db") },
		"PutAgent":        func() error { return s.PutAgent(model.Agent{ID: "a"}) },
		"PutAgents":       func() error { return s.PutAgents(model.Agent{ID: "a"}) },
		"DeleteAgent":     func() error { return s.DeleteAgent("a") },
		"Load":            func() error { _, _, err := s.Load(); return err },
		"DeleteSeenBefore": func() error {
			_, err := s.DeleteSeenBefore(t0)
			return err
		},
		"Close": s.Close,
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, catalog.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}

// TestConcurrent runs heartbeats, deletes, loads and prunes at once; run it
// with -race. Each writer owns one agent, so its final state is known.
func TestConcurrent(t *testing.T) {
	s := openTemp(t)
	const writers, rounds = 6, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			agent := fmt.Sprintf("agent-%d", w)
			for i := range rounds {
				seen := t0.Add(time.Duration(i+1) * time.Second)
				if err := s.PutAgent(model.Agent{ID: agent, LastSeen: seen}); err != nil {
					t.Error(err)
					return
				}
				err := s.PutResources(res("ssh", agent, seen), res("tcp", agent, seen), res(fmt.Sprintf("tmp-%d", i), agent, seen))
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.DeleteResources(agent, fmt.Sprintf("tmp-%d", i)); err != nil {
					t.Error(err)
					return
				}
			}
			if w%2 == 1 {
				if err := s.DeleteAgent(agent); err != nil {
					t.Error(err)
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := s.Load(); err != nil {
				t.Error(err)
				return
			}
			// Everything written is after t0, so this prunes nothing.
			if n, err := s.DeleteSeenBefore(t0); err != nil || n != 0 {
				t.Errorf("DeleteSeenBefore: got %d, %v, want 0, nil", n, err)
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	readers.Wait()

	agents, rs := load(t, s)
	if got, want := agentIDs(agents), []string{"agent-0", "agent-2", "agent-4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("agents: got %q, want %q", got, want)
	}
	want := []string{"ssh@agent-0", "ssh@agent-2", "ssh@agent-4", "tcp@agent-0", "tcp@agent-2", "tcp@agent-4"}
	if got := keys(rs); !reflect.DeepEqual(got, want) {
		t.Errorf("resources: got %q, want %q", got, want)
	}
}

// benchModes are the write modes the benchmarks compare: the durable
// default and Options.NoSync.
var benchModes = []struct {
	name string
	opts catalog.Options
}{{"sync", catalog.Options{}}, {"nosync", catalog.Options{NoSync: true}}}

func openBench(b *testing.B, opts catalog.Options) *catalog.Store {
	b.Helper()
	s, err := catalog.Open(b.TempDir(), opts)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkPutResources measures the heartbeat path: one agent reporting its
// resources in one batch, synced (the default) and not.
func BenchmarkPutResources(b *testing.B) {
	for _, mode := range benchModes {
		for _, n := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("%s/resources=%d", mode.name, n), func(b *testing.B) {
				s := openBench(b, mode.opts)
				rs := make([]model.Resource, n)
				for i := range rs {
					rs[i] = res(fmt.Sprintf("resource-%03d", i), "agent-1", t0)
					rs[i].Labels = map[string]string{"env": "prod", "region": "eu-west-1"}
				}
				i := 0
				for b.Loop() {
					i++
					seen := t0.Add(time.Duration(i) * time.Second)
					for j := range rs {
						rs[j].LastSeen, rs[j].Expires = seen, seen.Add(30*time.Second)
					}
					if err := s.PutResources(rs...); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPersistAgents measures persisting the agents of one router sweep
// (1,000 heartbeated agents): one PutAgent each, as the router does, or one
// PutAgents batch, synced and not. The figure is per sweep.
func BenchmarkPersistAgents(b *testing.B) {
	const agents = 1000
	as := make([]model.Agent, agents)
	for i := range as {
		as[i] = model.Agent{ID: fmt.Sprintf("agent-%05d", i), Hostname: "host", ProxyID: "proxy-1", Addr: "10.0.0.1:41234", Connected: t0}
	}
	for _, mode := range benchModes {
		b.Run(mode.name+"/each", func(b *testing.B) {
			s := openBench(b, mode.opts)
			for b.Loop() {
				for _, a := range as {
					if err := s.PutAgent(a); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(mode.name+"/batch", func(b *testing.B) {
			s := openBench(b, mode.opts)
			for b.Loop() {
				if err := s.PutAgents(as...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
