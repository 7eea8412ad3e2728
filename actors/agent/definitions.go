package agent

import (
	"maps"

	"github.com/warren-proxy/warren/internal/model"
)

// definitionsLearned takes the cluster's dynamic resource definitions and
// serves those the agent's watchers match (static resources keep their
// names); it reports whether the served set changed.
func (a *Agent) definitionsLearned(defs []model.Definition) bool {
	next := append([]ResourceConfig(nil), a.cfg.Resources...)
	static := map[string]bool{}
	for _, r := range next {
		static[r.Name] = true
	}
	for _, d := range defs {
		if static[d.Name] || !a.watches(d) {
			continue
		}
		next = append(next, ResourceConfig{Name: d.Name, Kind: d.Kind, Addr: d.Addr, Labels: d.Labels})
	}
	cur := a.resources()
	if len(cur) == len(next) {
		same := true
		for i := range cur {
			same = same && cur[i].Name == next[i].Name && cur[i].Addr == next[i].Addr && cur[i].Kind == next[i].Kind && maps.Equal(cur[i].Labels, next[i].Labels)
		}
		if same {
			return false
		}
	}
	a.served.Store(&next)
	a.health.setResources(next)
	a.log.Info("serving resources", "static", len(a.cfg.Resources), "dynamic", len(next)-len(a.cfg.Resources))
	return true
}

// watches reports whether a definition matches one of the agent's
// watchers and its selector admits this agent.
func (a *Agent) watches(d model.Definition) bool {
	sel, err := model.ParseSelector(d.Selector)
	if err != nil || !model.Matches(sel, a.cfg.Labels) {
		return false
	}
	for _, w := range a.cfg.Watch {
		if model.Matches(w.Labels, d.Labels) {
			return true
		}
	}
	return false
}
