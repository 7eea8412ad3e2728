package membership

import (
	"encoding/json"
	"fmt"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"

	"github.com/warren-proxy/warren/internal/model"
)

// delegate implements memberlist's Delegate, EventDelegate and
// ConflictDelegate for one Membership. memberlist calls the event and
// conflict methods with its node lock held: they only copy what they need
// under m.mu and never call back into memberlist.
type delegate struct{ m *Membership }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
	_ memberlist.AliveDelegate    = delegate{}
)

// NodeMeta returns our Meta as JSON; Validate and UpdateMeta keep it under
// the limit.
func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	if len(d.m.metaJSON) > limit { // cannot happen: checked when set
		return nil
	}
	return d.m.metaJSON
}

// NotifyMsg ignores user messages: we send none.
func (delegate) NotifyMsg([]byte) {}

// GetBroadcasts has nothing to add to gossip.
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d delegate) LocalState(join bool) []byte {
	if sd := d.m.cfg.State; sd != nil {
		return sd.LocalState(join)
	}
	return nil
}

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if sd := d.m.cfg.State; sd != nil {
		sd.MergeRemoteState(buf, join)
	}
}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.m.onNodeEvent(EventJoin, n) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.onNodeEvent(EventUpdate, n) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.m.onNodeEvent(EventLeave, n) }

// NotifyAlive, set only in a region's pool, refuses a proxy of another
// region (or one whose metadata does not say): the pool is for one
// region's proxies, and the cluster pool's view trusts its verdicts on
// them.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.Region != d.m.onlyRegion {
		return fmt.Errorf("proxy %s (%s) is not in region %s: only that region's proxies join its gossip pool", model.Quote(n.Name), n.Address(), model.Quote(d.m.onlyRegion))
	}
	return nil
}

// NotifyConflict is called when a node announces a name that another
// address already holds: two proxies configured with the same id. memberlist
// keeps the first and ignores the other; we make sure an operator hears of it.
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name == d.m.cfg.Meta.ProxyID {
		d.m.log.Error("another proxy uses this proxy's id: give every proxy a unique id",
			"member", existing.Name, "this_addr", existing.Address(), "other_addr", other.Address())
		return
	}
	d.m.log.Error("two proxies use the same id: the second is ignored until the first is gone; give every proxy a unique id",
		"member", existing.Name, "addr", existing.Address(), "other_addr", other.Address())
}

// nodeState mirrors memberlist v0.7.0's unexported nodeState, whose first
// field is the Node that EventDelegate methods receive a pointer to
// (state.go: Events.NotifyJoin(&state.Node)). Node.State itself is never
// set by memberlist (nodeState.State shadows it), so this is the only way
// to tell a dead member from one that left, and to read its incarnation.
// Read it only inside an EventDelegate call, under memberlist's node lock.
// If memberlist's layout changes, stateOf's sanity check and the tests
// that expect ReasonLeft and growing incarnations fail.
type nodeState struct {
	memberlist.Node
	Incarnation uint32
	State       memberlist.NodeStateType
	StateChange time.Time
}

// stateOf reads state and incarnation of a node handed to an
// EventDelegate method; ok is false if the values cannot be right.
func stateOf(n *memberlist.Node) (st State, inc uint32, ok bool) {
	ns := (*nodeState)(unsafe.Pointer(n))
	st = State(ns.State)
	return st, ns.Incarnation, st >= Alive && st <= Left
}

// decodeMeta decodes a member's metadata. The node name is the proxy id
// that memberlist enforces unique, so it wins over the id in the JSON.
func (m *Membership) decodeMeta(n *memberlist.Node) Meta {
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		m.log.Warn("cannot decode a member's metadata: is it a Warren proxy of the same version?",
			"proxy_id", n.Name, "addr", n.Address(), "err", err)
	}
	if meta.ProxyID != n.Name {
		if meta.ProxyID != "" {
			m.log.Warn("member metadata names another id than its node name; using the node name",
				"node_name", n.Name, "meta_id", meta.ProxyID)
		}
		meta.ProxyID = n.Name
	}
	return meta
}
