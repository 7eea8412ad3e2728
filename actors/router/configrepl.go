package router

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/config"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/catalog"
)

// Key prefixes of the replicated cluster configuration. A key is a prefix
// and a name; a lock's name is "<kind>/<name>".
const (
	PrefixResource = "resource/" // model.Definition
	PrefixRole     = "role/"     // access.Role
	PrefixToken    = "token/"    // access.Token, by id
	PrefixLock     = "lock/"     // access.Lock
	PrefixClaim    = "claim/"    // access.Claim, by resource name
)

var configPrefixes = []string{PrefixResource, PrefixRole, PrefixToken, PrefixLock, PrefixClaim}

// maxConfigValue bounds one configuration entry, from an administrator or
// a peer.
const maxConfigValue = 64 << 10

// PutDefinition writes (or, with Delete, removes) a dynamic resource
// definition through this proxy. The answer is a *ConfigResult once the
// write is durable here and sent to the peers.
type PutDefinition struct {
	Definition model.Definition
	Delete     bool
}

// PutConfig writes (or, with Delete, removes) one configuration entry
// through this proxy: Value is its JSON. The answer is a *ConfigResult
// once the write is durable here and sent to the peers.
type PutConfig struct {
	Key    string
	Value  []byte
	Delete bool
}

// ConfigResult answers PutDefinition and PutConfig.
type ConfigResult struct {
	Version config.Version
	Err     error
}

// ClaimNames asks which of Names an agent with Grant may be certified for
// now. For an unscoped grant the names nobody else has are claimed for the
// agent as a side effect. The answer is a *ClaimResult.
type ClaimNames struct {
	AgentID string
	Grant   access.Grant
	Names   []string
}

// ClaimResult answers ClaimNames.
type ClaimResult struct {
	Names   []string  // may be certified
	Refused []Refusal // may not, with the reason
}

// Refusal is a name an agent may not serve, and why.
type Refusal struct {
	Name   string
	Reason string
}

// configState is the router's share of the replicated configuration.
type configState struct {
	table *config.Table
	clock *config.Clock
	ticks int // beacons since the last full push
	// defs and policy are decoded from table whenever it changes.
	defs   []model.Definition
	policy *access.Policy
}

func toPB(e config.Entry) *clusterpb.ConfigEntry {
	return &clusterpb.ConfigEntry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Wall: e.Version.Wall, Logical: e.Version.Logical, Node: e.Version.Node}
}

func fromPB(e *clusterpb.ConfigEntry) config.Entry {
	return config.Entry{Key: e.Key, Value: e.Value, Deleted: e.Deleted, Version: config.Version{Wall: e.Wall, Logical: e.Logical, Node: e.Node}}
}

// knownKey reports whether key belongs to the configuration.
func knownKey(key string) bool {
	for _, p := range configPrefixes {
		if strings.HasPrefix(key, p) && len(key) > len(p) && len(key) <= 512 {
			return true
		}
	}
	return false
}

func (r *Router) loadConfig() {
	r.cfgState = configState{table: config.NewTable(), clock: config.NewClock(r.cfg.ProxyID, r.cfg.Clock)}
	if r.cfg.Store != nil {
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
	r.decodeConfig()
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
	pc := &PutConfig{Key: PrefixResource + m.Definition.Name, Delete: m.Delete}
	if !m.Delete {
		pc.Value, _ = json.Marshal(m.Definition)
	}
	ctx.Respond(r.putConfig(ctx, pc))
}

func (r *Router) onPutConfig(ctx actor.Context, m *PutConfig) {
	ctx.Respond(r.putConfig(ctx, m))
}

// putConfig writes one entry: durable here first, then to the peers.
func (r *Router) putConfig(ctx actor.Context, m *PutConfig) *ConfigResult {
	if !knownKey(m.Key) || len(m.Value) > maxConfigValue {
		return &ConfigResult{Err: fmt.Errorf("configuration key %q or its %d-byte value is not accepted", m.Key, len(m.Value))}
	}
	e := config.Entry{Key: m.Key, Version: r.cfgState.clock.Now(), Deleted: m.Delete}
	if !m.Delete {
		e.Value = m.Value
	}
	if err := r.persistConfig([]config.Entry{e}); err != nil {
		return &ConfigResult{Err: err}
	}
	r.cfgState.table.Merge(e)
	r.sendConfig(ctx, []config.Entry{e}, false)
	r.configChanged(ctx)
	return &ConfigResult{Version: e.Version}
}

func (r *Router) onConfigUpdate(ctx actor.Context, m *clusterpb.ConfigUpdate) {
	if m.Full && !r.repl.ready {
		r.repl.configFrom(m.Origin)
		r.changed(ctx)
	}
	var changed []config.Entry
	for _, pe := range m.Entries {
		e := fromPB(pe)
		if !knownKey(e.Key) || len(e.Value) > maxConfigValue {
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
	r.decodeConfig()
	r.defsChanged = true
	r.changed(ctx)
}

// decodeConfig decodes the live entries into definitions and the access
// policy. An entry that does not decode is logged and left out: a bad
// write from one proxy must not stop the others from serving.
func (r *Router) decodeConfig() {
	var (
		defs   []model.Definition
		roles  []access.Role
		locks  []access.Lock
		tokens []access.Token
		claims []access.Claim
	)
	for _, e := range r.cfgState.table.Live() {
		var err error
		switch {
		case strings.HasPrefix(e.Key, PrefixResource):
			err = decodeInto(e, &defs)
		case strings.HasPrefix(e.Key, PrefixRole):
			err = decodeInto(e, &roles)
		case strings.HasPrefix(e.Key, PrefixLock):
			err = decodeInto(e, &locks)
		case strings.HasPrefix(e.Key, PrefixToken):
			err = decodeInto(e, &tokens)
		case strings.HasPrefix(e.Key, PrefixClaim):
			err = decodeInto(e, &claims)
		}
		if err != nil {
			r.cfg.Logger.Error("undecodable cluster configuration entry; ignored", "key", e.Key, "err", err)
		}
	}
	r.cfgState.defs = defs
	r.cfgState.policy = access.NewPolicy(roles, locks, tokens, claims)
}

func decodeInto[T any](e config.Entry, out *[]T) error {
	var v T
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return err
	}
	*out = append(*out, v)
	return nil
}

// Policy is the access policy as of the last configuration change.
func (r *Router) policy() *access.Policy { return r.cfgState.policy }

func (r *Router) onClaimNames(ctx actor.Context, m *ClaimNames) {
	res := &ClaimResult{}
	for _, name := range m.Names {
		if err := r.takeName(ctx, m.AgentID, m.Grant, name, nil); err != nil {
			res.Refused = append(res.Refused, Refusal{Name: name, Reason: err.Error()})
		} else {
			res.Names = append(res.Names, name)
		}
	}
	ctx.Respond(res)
}

// takeName decides whether agent (with grant g) may serve name with
// labels. A scoped grant decides alone. An unscoped grant serves the names
// it has claimed; a name nobody has claimed, no other agent serves and no
// dynamic resource defines is claimed for it here, durably, and the claim
// is replicated. Two proxies that claim one name for two agents at once
// are settled by the configuration's last writer: the loser's heartbeats
// for it are refused from then on.
func (r *Router) takeName(ctx actor.Context, agent string, g access.Grant, name string, labels map[string]string) error {
	p := r.policy()
	err := p.MayServe(agent, g, name, labels)
	if err == nil || g.Scoped() {
		return err
	}
	if c, ok := p.ClaimOf(name); ok && c.Agent != agent {
		return err
	}
	if r.cfg.Reserved != nil && r.cfg.Reserved(name) {
		return fmt.Errorf("resource name %s is reserved (a proxy's name, an address or localhost); only a token that grants it by name can serve it", name)
	}
	if other := r.servedByOther(agent, name); other != "" {
		return fmt.Errorf("resource %s is already served by agent %s and this agent's token %s names no resources; join with a token that grants it (`warren token add --resources %s`)", name, other, g.Token, name)
	}
	for _, d := range r.cfgState.defs {
		if d.Name == name {
			return fmt.Errorf("resource %s is a dynamic resource: only agents whose token grants it may serve it (`warren token add --resources %s`)", name, name)
		}
	}
	value, _ := json.Marshal(access.Claim{Name: name, Agent: agent, At: r.cfg.Clock()})
	if res := r.putConfig(ctx, &PutConfig{Key: PrefixClaim + name, Value: value}); res.Err != nil {
		return fmt.Errorf("record claim on %s: %w", name, res.Err)
	}
	r.cfg.Logger.Info("name claimed", "resource", name, "agent", agent, "token", g.Token)
	return r.policy().MayServe(agent, g, name, labels)
}

// servedByOther returns another agent that serves (or served) name, here
// or on a peer, or "".
func (r *Router) servedByOther(agent, name string) string {
	for id, st := range r.agents {
		if _, ok := st.resources[name]; ok && id != agent {
			return id
		}
	}
	for _, e := range r.cfg.Table.Snapshot().Lookup(name) {
		if e.AgentID != agent {
			return e.AgentID
		}
	}
	return ""
}

// onTokenRedeem counts one use of a use-limited token this proxy made.
func (r *Router) onTokenRedeem(ctx actor.Context, m *clusterpb.TokenRedeem) {
	ctx.Respond(r.redeem(ctx, m))
}

func (r *Router) redeem(ctx actor.Context, m *clusterpb.TokenRedeem) *clusterpb.TokenRedeemResult {
	p := r.policy()
	t, ok := p.Token(m.Id)
	if !ok || t.Hash != m.Hash {
		return &clusterpb.TokenRedeemResult{Error: "join token is not known to the proxy that made it; ask an administrator for a new one"}
	}
	if t.Origin != r.cfg.ProxyID {
		return &clusterpb.TokenRedeemResult{Error: fmt.Sprintf("join token %s is counted by proxy %s, not %s", t.ID, t.Origin, r.cfg.ProxyID)}
	}
	if err := t.Redeemable(p, r.cfg.Clock()); err != nil {
		return &clusterpb.TokenRedeemResult{Error: err.Error()}
	}
	t.Used++
	value, _ := json.Marshal(t)
	if res := r.putConfig(ctx, &PutConfig{Key: PrefixToken + t.ID, Value: value}); res.Err != nil {
		return &clusterpb.TokenRedeemResult{Error: "count the token's use: " + res.Err.Error()}
	}
	r.cfg.Logger.Info("join token used", "token", t.ID, "agent", m.Agent, "used", t.Used, "uses", t.Uses)
	return &clusterpb.TokenRedeemResult{Ok: true}
}
