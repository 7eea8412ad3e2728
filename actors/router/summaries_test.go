package router

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/internal/model"
)

// TestSummariesMatchList: Summaries gives, for the names asked, the very
// lines List gives, in the order asked, and leaves unknown names out.
func TestSummariesMatchList(t *testing.T) {
	pid := actor.NewPID("nonhost", "t1")
	s := &Snapshot{Resources: map[string][]Endpoint{
		"db":  {{Resource: model.Resource{Name: "db", AgentID: "a1", Kind: "tcp", Healthy: true}, Online: true, Tunnel: pid}},
		"web": {{Resource: model.Resource{Name: "web", AgentID: "a1", Kind: "tcp"}, Online: true, Tunnel: pid}, {Resource: model.Resource{Name: "web", AgentID: "a2", Kind: "tcp", Healthy: true}}},
		"ssh": {{Resource: model.Resource{Name: "ssh", AgentID: "a3", Kind: "ssh", Healthy: true}}},
	}}
	byName := map[string]model.Summary{}
	for _, sum := range s.List() {
		byName[sum.Name] = sum
	}
	got := s.Summaries([]string{"web", "nope", "db"})
	if len(got) != 2 {
		t.Fatalf("got %d summaries (%+v), want 2: web and db", len(got), got)
	}
	for i, name := range []string{"web", "db"} {
		if got[i].Name != name || got[i].Healthy != byName[name].Healthy || got[i].Agents != byName[name].Agents || got[i].Status != byName[name].Status {
			t.Errorf("summary %d: got %+v, want %+v", i, got[i], byName[name])
		}
	}
	if got[1].Healthy != 1 || got[0].Healthy != 0 || got[0].Agents != 2 {
		t.Errorf("got web %+v and db %+v, want web 0 of 2 healthy, db 1 healthy", got[0], got[1])
	}
}
