package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/streams"
)

// TestLiveListsRunningSessionsAndConnectFailovers: a session whose first
// candidate fails is listed while it runs, on the agent that served it,
// and its failover is recorded from the failed candidate to that agent,
// with the reason; once it ends it is no longer listed.
func TestLiveListsRunningSessionsAndConnectFailovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// a1 is local and comes first; a2 through peer p2 serves.
		r := newRig(t, nil, endpoint("a1", "p1", true), endpoint("a2", "p2", false))
		live := &Live{}
		r.s.cfg.Live = live
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = func(context.Context) (streams.Stream, error) { return nil, errors.New("upstream down") }
		r.peer.agents["a2"] = answer(0, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)

		got := live.Sessions()
		if len(got) != 1 {
			t.Fatalf("live sessions: %+v, want one", got)
		}
		if s := got[0]; s.ID != "s1" || s.User != "alice" || s.Resource != "db" || s.Agent != "a2" || s.Path != "p1>p2>a2" || !s.Started.Equal(r.start) {
			t.Errorf("live session: %+v", s)
		}
		fo := live.Failovers()
		if len(fo) != 1 {
			t.Fatalf("failovers: %+v, want one", fo)
		}
		if f := fo[0]; f.Kind != model.FailoverConnect || f.Session != "s1" || f.Resource != "db" || f.From != "p1>a1" || f.To != "p1>p2>a2" || !strings.Contains(f.Reason, "upstream down") {
			t.Errorf("failover: %+v", f)
		}

		r.user.userEnd.Close()
		<-done
		agent.Close()
		if got := live.Sessions(); len(got) != 0 {
			t.Errorf("live sessions after the end: %+v", got)
		}
	})
}

// TestSessionThatConnectsAtOnceRecordsNoFailover: the first candidate
// serves; nothing moved.
func TestSessionThatConnectsAtOnceRecordsNoFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true), endpoint("a2", "p1", true))
		live := &Live{}
		r.s.cfg.Live = live
		agentEnd := make(chan net.Conn, 2)
		r.local.agents["a1"] = answer(0, agentEnd)
		r.local.agents["a2"] = answer(0, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		if got := live.Sessions(); len(got) != 1 || got[0].Path != "p1>"+got[0].Agent {
			t.Errorf("live sessions: %+v", got)
		}
		r.user.userEnd.Close()
		<-done
		agent.Close()
		if fo := live.Failovers(); len(fo) != 0 {
			t.Errorf("failovers: %+v, want none", fo)
		}
	})
}

// TestFailoverRingKeepsTheLatest: the ring holds the newest failoverRing
// failovers, newest first.
func TestFailoverRingKeepsTheLatest(t *testing.T) {
	var l Live
	total := failoverRing + 7
	for i := range total {
		l.addFailover(model.Failover{Session: fmt.Sprint(i), Time: time.Unix(int64(i), 0)})
	}
	got := l.Failovers()
	if len(got) != failoverRing {
		t.Fatalf("%d failovers, want %d", len(got), failoverRing)
	}
	for i, f := range got {
		if want := fmt.Sprint(total - 1 - i); f.Session != want {
			t.Fatalf("failover %d is session %s, want %s", i, f.Session, want)
		}
	}
}

// TestResumeRecordsAFailoverFromTheOldPath: each resume records the hop it
// left, the hop it took and why the old one broke.
func TestResumeRecordsAFailoverFromTheOldPath(t *testing.T) {
	r := newRig(t, nil, endpoint("a1", "p2", false))
	live := &Live{}
	r.s.cfg.Live = live
	e := endpoint("a1", "p2", false)
	r.s.pathLost(errors.New("peer p2 gone"))
	r.s.resumedOver(e, "p1>a1", 1500*time.Millisecond)
	r.s.pathLost(errors.New("tunnel closed"))
	r.s.resumedOver(e, "p1>p3>a1", time.Second)
	fo := live.Failovers()
	if len(fo) != 2 {
		t.Fatalf("failovers: %+v", fo)
	}
	if f := fo[1]; f.Kind != model.FailoverResume || f.From != "p1>p2>a1" || f.To != "p1>a1" || f.Reason != "peer p2 gone; stalled 1.5s" {
		t.Errorf("first resume: %+v", f)
	}
	if f := fo[0]; f.From != "p1>a1" || f.To != "p1>p3>a1" || !strings.HasPrefix(f.Reason, "tunnel closed") {
		t.Errorf("second resume: %+v", f)
	}
	if n := r.s.shown.resumes.Load(); n != 2 {
		t.Errorf("resumes: %d, want 2", n)
	}
}
