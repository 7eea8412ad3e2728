package router

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/config"
	"github.com/warren-proxy/warren/storage/catalog"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// definitionPrefix keys dynamic resource definitions in the configuration.
const definitionPrefix = "resource/"

// PutDefinition writes (or, with Delete, removes) a dynamic resource
// definition through this proxy. The answer is a *ConfigResult once the
// write is durable here and sent to the peers.
type PutDefinition struct {
	Definition revtunnel.Definition
	Delete     bool
}

// ConfigResult answers PutDefinition.
type ConfigResult struct {
	Version config.Version
	Err     error
}

// configState is the router's share of the replicated configuration.
type configState struct {
	table *config.Table
	clock *config.Clock
	ticks int // beacons since the last full push
}

func toPB(e config.Entry) *clusterpb.ConfigEntry {
	return &clusterpb.ConfigEntry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Wall: e.Version.Wall, Logical: e.Version.Logical, Node: e.Version.Node}
}

func fromPB(e *clusterpb.ConfigEntry) config.Entry {
	return config.Entry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Version: config.Version{Wall: e.Wall, Logical: e.Logical, Node: e.Node}}
}

func (r *Router) loadConfig() {
	r.cfgState = configState{table: config.NewTable(), clock: config.NewClock(r.cfg.ProxyID, r.cfg.Clock)}
	if r.cfg.Store == nil {
		return
	}
	entries, err := r.cfg.Store.LoadConfig()
	if err != nil {
		r.cfg.Logger.Error("load cluster configuration", "err", err)
	}
	for _, e := range entries {
		v := config.Version{Wall: e.Wall, Logical: e.Logical, Node: e.Node}
		r.cfgState.clock.Observe(v)
		r.cfgState.table.Merge(config.Entry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Version: v})
	}
}

func (r *Router) persistConfig(es []config.Entry) error {
	if r.cfg.Store == nil || len(es) == 0 {
		return nil
	}
	out := make([]catalog.ConfigEntry, len(es))
	for i, e := range es {
		out[i] = catalog.ConfigEntry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Wall: e.Version.Wall, Logical: e.Version.Logical, Node: e.Version.Node}
	}
	return r.cfg.Store.PutConfig(out...)
}

func (r *Router) onPutDefinition(ctx actor.Context, m *PutDefinition) {
	e := config.Entry{Key: definitionPrefix + m.Definition.Name, Version: r.cfgState.clock.Now()}
	if m.Delete {
		e.Deleted = true
	} else {
		e.Value, _ = json.Marshal(m.Definition)
	}
	if err := r.persistConfig([]config.Entry{e}); err != nil {
		ctx.Respond(&ConfigResult{Err: err})
		return
	}
	r.cfgState.table.Merge(e)
	r.sendConfig(ctx, []config.Entry{e}, false)
	r.configChanged(ctx)
	ctx.Respond(&ConfigResult{Version: e.Version})
}

func (r *Router) onConfigUpdate(ctx actor.Context, m *clusterpb.ConfigUpdate) {
	var changed []config.Entry
	for _, pe := range m.Entries {
		e := fromPB(pe)
		if !strings.HasPrefix(e.Key, definitionPrefix) {
			continue
		}
		r.cfgState.clock.Observe(e.Version)
		if r.cfgState.table.Merge(e) {
			changed = append(changed, e)
		}
	}
	if len(changed) == 0 {
		return
	}
	if err := r.persistConfig(changed); err != nil {
		r.cfg.Logger.Error("persist cluster configuration", "err", err)
	}
	r.configChanged(ctx)
}

// sendConfig sends entries to every peer (all of them with full).
func (r *Router) sendConfig(ctx actor.Context, es []config.Entry, full bool) {
	u := &clusterpb.ConfigUpdate{Origin: r.cfg.ProxyID, Full: full}
	for _, e := range es {
		u.Entries = append(u.Entries, toPB(e))
	}
	for _, p := range r.repl.peers {
		ctx.Send(p.link, forward{msg: u})
	}
}

// sendFullConfig pushes the whole table to one peer: on its (re)join, so a
// proxy that was down catches up, and periodically as anti-entropy.
func (r *Router) sendFullConfig(ctx actor.Context, peer peerState) {
	u := &clusterpb.ConfigUpdate{Origin: r.cfg.ProxyID, Full: true}
	for _, e := range r.cfgState.table.All() {
		u.Entries = append(u.Entries, toPB(e))
	}
	ctx.Send(peer.link, forward{msg: u})
}

// antiEntropy runs on beacons: every tenth, the full configuration goes to
// every peer, and tombstones older than a week are forgotten.
func (r *Router) antiEntropy(ctx actor.Context) {
	r.cfgState.ticks++
	if r.cfgState.ticks%10 != 0 {
		return
	}
	for _, p := range r.repl.peers {
		r.sendFullConfig(ctx, p)
	}
	r.cfgState.table.PruneTombstones(r.cfg.Clock().Add(-7 * 24 * time.Hour))
}

func (r *Router) configChanged(ctx actor.Context) {
	r.defsChanged = true
	r.changed(ctx)
}

// definitions decodes the live dynamic resource definitions.
func (r *Router) definitions() []revtunnel.Definition {
	var out []revtunnel.Definition
	for _, e := range r.cfgState.table.Live() {
		if !strings.HasPrefix(e.Key, definitionPrefix) {
			continue
		}
		var d revtunnel.Definition
		if err := json.Unmarshal(e.Value, &d); err != nil {
			r.cfg.Logger.Error("undecodable resource definition", "key", e.Key, "err", err)
			continue
		}
		out = append(out, d)
	}
	return out
}
