package routes

import (
	"testing"

	"github.com/warren-proxy/warren/cluster/clusterpb"
)

func route(id string, online bool) *clusterpb.AgentRoute {
	return &clusterpb.AgentRoute{AgentId: id, Online: online}
}

func state(origin string, epoch, seq uint64, ids ...string) *clusterpb.RouteState {
	s := &clusterpb.RouteState{Origin: origin, Epoch: epoch, Seq: seq}
	for _, id := range ids {
		s.Agents = append(s.Agents, route(id, true))
	}
	return s
}

func delta(origin string, epoch, seq uint64, up []string, rm []string) *clusterpb.RouteDelta {
	d := &clusterpb.RouteDelta{Origin: origin, Epoch: epoch, Seq: seq, Removals: rm}
	for _, id := range up {
		d.Upserts = append(d.Upserts, route(id, true))
	}
	return d
}

func agents(t *Table) map[string]bool {
	out := map[string]bool{}
	t.Agents(func(origin string, a *clusterpb.AgentRoute) { out[origin+"/"+a.AgentId] = true })
	return out
}

func TestNothingFromAnOriginThatIsNotAlive(t *testing.T) {
	tb := New()
	if got := tb.ApplyState(state("p2", 1, 1, "a")); got != Ignored {
		t.Fatalf("state from unknown origin: got %v, want ignored", got)
	}
	if got := tb.ApplyDelta(delta("p2", 1, 1, []string{"a"}, nil)); got != Ignored {
		t.Fatalf("delta from unknown origin: got %v, want ignored", got)
	}
	if len(agents(tb)) != 0 {
		t.Fatalf("got routes %v, want none", agents(tb))
	}
}

func TestDeltasApplyInOrderAndGapsAskForSync(t *testing.T) {
	tb := New()
	tb.MemberAlive("p2")
	if got := tb.ApplyDelta(delta("p2", 1, 1, []string{"a"}, nil)); got != NeedSync {
		t.Fatalf("delta before the first state: got %v, want need-sync", got)
	}
	if got := tb.ApplyState(state("p2", 1, 3, "a")); got != Applied {
		t.Fatalf("first state: got %v, want applied", got)
	}
	steps := []struct {
		d    *clusterpb.RouteDelta
		want Result
	}{
		{delta("p2", 1, 3, []string{"x"}, nil), Ignored},  // duplicate
		{delta("p2", 1, 2, []string{"x"}, nil), Ignored},  // reordered, older
		{delta("p2", 1, 4, []string{"b"}, nil), Applied},  // next
		{delta("p2", 1, 6, []string{"c"}, nil), NeedSync}, // gap
		{delta("p2", 0, 9, []string{"old"}, nil), Ignored},
		{delta("p2", 2, 1, []string{"new"}, nil), NeedSync}, // the origin restarted
		{delta("p2", 1, 5, nil, []string{"a"}), Applied},
	}
	for i, s := range steps {
		if got := tb.ApplyDelta(s.d); got != s.want {
			t.Fatalf("step %d (epoch %d seq %d): got %v, want %v", i, s.d.Epoch, s.d.Seq, got, s.want)
		}
	}
	got := agents(tb)
	if len(got) != 1 || !got["p2/b"] {
		t.Fatalf("got routes %v, want only p2/b", got)
	}
}

func TestStaleStateNeverReplacesNewer(t *testing.T) {
	tb := New()
	tb.MemberAlive("p2")
	tb.ApplyState(state("p2", 2, 10, "new"))
	for _, s := range []*clusterpb.RouteState{state("p2", 2, 9, "old"), state("p2", 1, 99, "old"), state("p2", 2, 10, "same")} {
		if got := tb.ApplyState(s); got != Ignored {
			t.Fatalf("state (%d,%d): got %v, want ignored", s.Epoch, s.Seq, got)
		}
	}
	if got := tb.ApplyState(state("p2", 3, 1, "restarted")); got != Applied {
		t.Fatalf("newer epoch: got %v, want applied", got)
	}
}

func TestMemberGoneDropsAndLateMessagesDoNotResurrect(t *testing.T) {
	tb := New()
	tb.MemberAlive("p2")
	tb.MemberAlive("p3")
	tb.ApplyState(state("p2", 1, 1, "a"))
	tb.ApplyState(state("p3", 1, 1, "b"))
	if !tb.MemberGone("p2") {
		t.Fatal("MemberGone reported nothing dropped")
	}
	if got := tb.ApplyDelta(delta("p2", 1, 2, []string{"a2"}, nil)); got != Ignored {
		t.Fatalf("late delta from a dead origin: got %v, want ignored", got)
	}
	if got := tb.ApplyState(state("p2", 1, 5, "a")); got != Ignored {
		t.Fatalf("late state from a dead origin: got %v, want ignored", got)
	}
	if got := agents(tb); len(got) != 1 || !got["p3/b"] {
		t.Fatalf("got %v, want only p3/b", got)
	}
	// The origin comes back (a pause ended): it must send a full state;
	// the same epoch is fine, deltas wait for it.
	tb.MemberAlive("p2")
	if got := tb.ApplyDelta(delta("p2", 1, 6, []string{"x"}, nil)); got != NeedSync {
		t.Fatalf("delta after rejoin: got %v, want need-sync", got)
	}
	if got := tb.ApplyState(state("p2", 1, 5, "a")); got != Applied {
		t.Fatalf("state after rejoin: got %v, want applied", got)
	}
	if got := agents(tb); len(got) != 2 {
		t.Fatalf("got %v, want p2/a and p3/b", got)
	}
}

// A beacon names the origin's seq without carrying its change: one just
// past a lost delta must ask for the state, not pass for that delta.
func TestABeaconAfterALostDeltaAsksForSync(t *testing.T) {
	tb := New()
	tb.MemberAlive("p2")
	tb.ApplyState(state("p2", 1, 3, "a"))
	// Delta 4 (which added b) is lost; the beacon at seq 4 arrives.
	beacon := &clusterpb.RouteDelta{Origin: "p2", Epoch: 1, Seq: 4, Beacon: true}
	if got := tb.ApplyDelta(beacon); got != NeedSync {
		t.Fatalf("beacon one past our seq: got %v, want need-sync", got)
	}
	if got := tb.ApplyDelta(delta("p2", 1, 4, []string{"b"}, nil)); got != Applied {
		t.Fatalf("the delta itself after the beacon: got %v, want applied", got)
	}
	beacon.Seq = 4
	if got := tb.ApplyDelta(beacon); got != Ignored {
		t.Fatalf("beacon at our seq: got %v, want ignored", got)
	}
}
