package membership

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/warren-proxy/warren/internal/model"
)

// updateTimeout bounds how long UpdateMeta waits for its broadcast.
const updateTimeout = 5 * time.Second

// defaultLeaveTimeout is used by Leave when given no timeout.
const defaultLeaveTimeout = 5 * time.Second

// Membership is this proxy's view of the cluster's proxies. Its methods are
// safe for concurrent use.
type Membership struct {
	cfg    Config // validated copy
	set    settings
	log    *slog.Logger
	events chan Event
	queue  *eventQueue
	done   chan struct{} // closed by Close: stops the loop and the feeder
	wg     sync.WaitGroup
	// tweak, if set, edits memberlist's config last (tests only: a
	// transport that can be cut off, shorter dead-node timers).
	tweak func(*memberlist.Config)

	// region is the region's pool (Config.RegionBindAddr), nil without one.
	region *Membership
	// In a region's pool: onlyRegion refuses proxies of any other region,
	// and seeds adds the cluster pool's view of this region's proxies to
	// the (empty) configured seeds.
	onlyRegion string
	seeds      func() []string

	// opMu orders memberlist calls that must not overlap Shutdown
	// (memberlist.Leave panics after it): Leave and UpdateMeta hold it
	// for reading, Close for writing.
	opMu sync.RWMutex

	mu       sync.Mutex // guards the fields below
	meta     Meta
	metaJSON []byte
	ml       *memberlist.Memberlist // nil until Start
	self     Member
	members  map[string]Member        // alive and suspect, by ProxyID, self included
	failed   map[string]*failedMember // declared dead, to reconnect to
	// regionDown holds the members of this region that the region's pool
	// declared dead or left while the cluster pool still lists them: they
	// are out of Members and have had their EventLeave. The cluster pool's
	// own leave, or a join in either pool, ends that.
	regionDown map[string]bool
	regionAddr string // this proxy's address in the region's pool, once started
	// problem is why this proxy is alone although it has seeds, when the
	// reason is one an operator must fix (a seed refused our gossip key);
	// nil otherwise. The rejoin loop sets it after every round.
	problem   error
	closed    bool
	left      bool
	badLayout bool // stateOf found nonsense once (logged)
}

// New checks cfg and returns a Membership that Start joins to the cluster.
func New(cfg Config) (*Membership, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("membership config: %w", err)
	}
	s.cfg.Meta.RegionGossip = ""
	if cfg.RegionBindAddr != "" {
		longest := s.cfg.Meta
		longest.RegionGossip = maxAddr
		if err := longest.Validate(); err != nil {
			return nil, fmt.Errorf("membership config: with a region pool: %w", err)
		}
	}
	metaJSON, err := json.Marshal(s.cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	log := s.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Membership{
		cfg:        s.cfg,
		set:        s,
		log:        log,
		events:     make(chan Event, 16),
		queue:      newEventQueue(),
		done:       make(chan struct{}),
		meta:       s.cfg.Meta,
		metaJSON:   metaJSON,
		self:       Member{Meta: s.cfg.Meta},
		members:    make(map[string]Member),
		failed:     make(map[string]*failedMember),
		regionDown: make(map[string]bool),
	}
	if cfg.RegionBindAddr != "" {
		profile := cmp.Or(cfg.RegionProfile, model.ProfileLAN)
		region, err := New(Config{
			Meta:           Meta{ProxyID: cfg.Meta.ProxyID, Region: cfg.Meta.Region},
			BindAddr:       cfg.RegionBindAddr,
			AdvertiseAddr:  cfg.RegionAdvertiseAddr,
			SecretKey:      cfg.SecretKey,
			Profile:        profile,
			RejoinInterval: cfg.RejoinInterval,
			Dial:           cfg.Dial,
			Logger:         log.With("pool", "region"),
		})
		if err != nil {
			return nil, fmt.Errorf("region pool: %w", err)
		}
		region.onlyRegion = cfg.Meta.Region
		region.seeds = m.regionSeeds
		m.region = region
	}
	return m, nil
}

// Start binds the gossip port, then joins the seeds that are reachable.
// With none reachable it runs alone and keeps retrying them in the
// background every RejoinInterval: a proxy may start before its seeds.
// ctx bounds only this first join attempt; if it ends first, Start closes
// the Membership and returns ctx's error.
func (m *Membership) Start(ctx context.Context) error {
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrClosed
	case m.ml != nil:
		m.mu.Unlock()
		return ErrStarted
	}
	m.mu.Unlock()

	if len(m.cfg.SecretKey) == 0 && m.onlyRegion == "" {
		m.log.Warn("gossip is not encrypted: anyone who reaches the gossip port can join the cluster; set gossip.secret_key")
	}
	if m.region != nil {
		// First, so that the cluster pool advertises where it is.
		if err := m.region.Start(ctx); err != nil {
			return fmt.Errorf("start the region's gossip pool on %s: %w", m.cfg.RegionBindAddr, err)
		}
		m.mu.Lock()
		m.regionAddr = m.region.GossipAddr()
		err := m.setMetaLocked(m.meta)
		m.self.Meta = m.meta
		m.mu.Unlock()
		if err != nil {
			m.closeRegion()
			return fmt.Errorf("start gossip: %w", err)
		}
	}
	mlc, err := m.memberlistConfig()
	if err != nil {
		m.closeRegion()
		return fmt.Errorf("start gossip on %s: %w", m.cfg.BindAddr, err)
	}
	ml, err := memberlist.Create(mlc)
	if err != nil {
		if mlc.Transport != nil {
			_ = mlc.Transport.Shutdown()
		}
		m.closeRegion()
		return fmt.Errorf("start gossip on %s: %w", m.cfg.BindAddr, err)
	}
	m.mu.Lock()
	if m.closed { // Close ran meanwhile
		m.mu.Unlock()
		_ = ml.Shutdown()
		m.closeRegion()
		return ErrClosed
	}
	m.ml = ml
	m.wg.Add(2) // under mu: Close waits for these once it sees ml
	if m.region != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for ev := range m.region.Events() { // until Close closes the pool
				m.onRegionEvent(ev)
			}
		}()
	}
	m.mu.Unlock()
	m.log.Debug("gossip started", "addr", m.GossipAddr())

	go func() {
		defer m.wg.Done()
		m.queue.run(m.events, m.done)
	}()
	firstDone := make(chan struct{})
	go func() {
		defer m.wg.Done()
		m.rejoinLoop(ml, firstDone)
	}()
	select {
	case <-firstDone:
		return nil
	case <-ctx.Done():
		_ = m.Close()
		return fmt.Errorf("start membership: %w", ctx.Err())
	}
}

// memberlistConfig builds memberlist's Config from ours. With Config.Dial
// it binds the gossip port itself (memberlist would otherwise).
func (m *Membership) memberlistConfig() (*memberlist.Config, error) {
	c := *m.set.ml // a copy: Create writes the dynamic port into it
	c.Name = m.cfg.Meta.ProxyID
	c.BindAddr = m.set.bindIP
	c.BindPort = m.set.bindPort
	c.AdvertiseAddr = m.set.advertiseIP
	c.AdvertisePort = m.set.advertisePort
	if c.AdvertisePort == 0 {
		c.AdvertisePort = m.set.bindPort // 0 too: memberlist uses the bound port
	}
	if len(m.cfg.SecretKey) > 0 {
		c.SecretKey = m.cfg.SecretKey
		// Refuse anything not encrypted with our key, both ways.
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	d := delegate{m}
	c.Delegate = d
	c.Events = d
	c.Conflict = d
	if m.onlyRegion != "" {
		c.Alive = d
	}
	c.LogOutput = nil
	c.Logger = newMemberlistLogger(m.log)
	if m.cfg.Dial != nil {
		t, err := newDialTransport(c.BindAddr, c.BindPort, c.Logger, m.cfg.Dial)
		if err != nil {
			return nil, err
		}
		c.Transport = t
		if c.BindPort == 0 { // memberlist fills these in only for its own transport
			c.BindPort = t.GetAutoBindPort()
			if c.AdvertisePort == 0 {
				c.AdvertisePort = c.BindPort
			}
		}
	}
	if m.tweak != nil {
		m.tweak(&c)
	}
	return &c, nil
}

// maxAddr is the longest gossip address Meta may carry (IPv4); an IPv6
// one is longer, and Validate, run with the real one, refuses what does
// not fit.
const maxAddr = "255.255.255.255:65535"

// setMetaLocked makes meta, with this proxy's address in the region's
// pool, what gossip advertises from now on. Caller holds mu.
func (m *Membership) setMetaLocked(meta Meta) error {
	meta.RegionGossip = m.regionAddr
	b, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if len(b) > MaxMetaSize { // only with a long IPv6 address: New and UpdateMeta checked the rest
		return fmt.Errorf("gossip metadata with the region pool's address %s encodes to %d bytes, more than the %d gossip carries: shorten the region, zone, version or addresses", m.regionAddr, len(b), MaxMetaSize)
	}
	m.meta, m.metaJSON = meta, b
	return nil
}

// Problem reports why this proxy cannot be in the cluster when an operator
// must act: it is alone, and a seed refused it because the gossip keys
// differ. A proxy whose seeds are merely down is not a problem (it may
// start before them); nil means none.
func (m *Membership) Problem() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.problem
}

// Events delivers every join, update and leave in order, starting with
// this proxy's own join. It is never dropped: events queue without bound
// until read, so read it steadily. Close closes the channel (dropping any
// events still queued).
func (m *Membership) Events() <-chan Event { return m.events }

// Members returns the members that are not dead or gone, this proxy
// included, sorted by ProxyID. memberlist does not report suspicion to its
// delegates, so a suspect member is listed with State Alive until it is
// declared dead.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for name, mem := range m.members {
		if !m.regionDown[name] {
			out = append(out, mem)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ProxyID, b.ProxyID) })
	return out
}

// Self returns this proxy as the cluster sees it (GossipAddr is empty
// before Start).
func (m *Membership) Self() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self
}

// GossipAddr returns the address other proxies reach this one at: the
// advertised IP with the port actually bound ("" before Start). Use it as
// a seed for others.
func (m *Membership) GossipAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self.GossipAddr
}

// UpdateMeta re-advertises this proxy with meta (the ProxyID cannot
// change). Before Start it only replaces what Start will advertise.
func (m *Membership) UpdateMeta(meta Meta) error {
	meta.RegionGossip = ""
	if m.region != nil {
		meta.RegionGossip = maxAddr // the longest it can be, for Validate
	}
	if err := meta.Validate(); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrClosed
	case m.left:
		m.mu.Unlock()
		return ErrLeft
	case meta.ProxyID != m.meta.ProxyID:
		m.mu.Unlock()
		return fmt.Errorf("update meta: Meta.ProxyID cannot change from %q to %q: it is the gossip node name", m.meta.ProxyID, meta.ProxyID)
	case m.region != nil && meta.Region != m.meta.Region:
		m.mu.Unlock()
		return fmt.Errorf("update meta: Meta.Region cannot change from %q to %q while this proxy is in the region's gossip pool", m.meta.Region, meta.Region)
	}
	if err := m.setMetaLocked(meta); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("update meta: %w", err)
	}
	ml := m.ml
	if ml == nil {
		m.self.Meta = m.meta
	}
	m.mu.Unlock()
	if ml == nil {
		return nil
	}
	if err := ml.UpdateNode(updateTimeout); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	return nil
}

// Leave announces a graceful departure and waits until it went out to
// another member or timeout (≤0: 5s) passed: the others see EventLeave
// with ReasonLeft at once instead of detecting a failure. Gossip keeps
// running, without rejoining, until Close.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = defaultLeaveTimeout
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	m.mu.Lock()
	ml := m.ml
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrClosed
	case ml == nil:
		m.mu.Unlock()
		return ErrNotStarted
	}
	m.left = true
	m.mu.Unlock()
	// Both pools at once: the region's proxies hear it from the first to
	// arrive, and one leave alone is never reported twice.
	var regionErr error
	var wg sync.WaitGroup
	if m.region != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			regionErr = m.region.Leave(timeout)
		}()
	}
	err := ml.Leave(timeout)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if regionErr != nil {
		return fmt.Errorf("leave the region's pool: %w", regionErr)
	}
	return nil
}

// Close stops gossip at once, without a leave message: the others detect
// a failure, as if this proxy crashed. Call it after Leave too. It waits
// for every goroutine it started (a join attempt in flight may hold it up
// to the profile's TCP timeout) and closes the Events channel.
func (m *Membership) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	ml := m.ml
	m.mu.Unlock()

	close(m.done)
	if ml == nil {
		close(m.events) // Start never ran the feeder
		m.closeRegion()
		return nil
	}
	// The region's pool first: it ends the loop that follows its events.
	m.closeRegion()
	// Stop the rejoin loop first: a join finishing after Shutdown would
	// announce this proxy alive again.
	m.wg.Wait()
	m.opMu.Lock()
	err := ml.Shutdown()
	m.opMu.Unlock()
	if err != nil {
		return fmt.Errorf("shut down gossip: %w", err)
	}
	return nil
}

// closeRegion stops the region's pool, if any.
func (m *Membership) closeRegion() {
	if m.region == nil {
		return
	}
	if err := m.region.Close(); err != nil {
		m.log.Warn("cannot shut down the region's gossip pool", "err", err)
	}
}

// onNodeEvent records an event from memberlist. It runs under memberlist's
// node lock, so events arrive one at a time and in order.
func (m *Membership) onNodeEvent(typ EventType, n *memberlist.Node) {
	st, inc, ok := stateOf(n)
	switch {
	case !ok:
		st = Alive
		if typ == EventLeave {
			st = Dead
		}
	case typ == EventLeave && st != Dead && st != Left:
		ok, st = false, Dead
	case typ != EventLeave && st != Alive && st != Suspect:
		ok, st = false, Alive
	}
	mem := Member{Meta: m.decodeMeta(n), GossipAddr: n.Address(), State: st, Incarnation: inc}
	ev := Event{Type: typ, Member: mem}
	if typ == EventLeave {
		ev.Reason = ReasonDead
		if st == Left {
			ev.Reason = ReasonLeft
		}
	}
	isSelf := n.Name == m.cfg.Meta.ProxyID

	m.mu.Lock()
	if !ok && !m.badLayout {
		m.badLayout = true
		m.log.Error("cannot read member state from memberlist: was memberlist upgraded past v0.7.0? leave reasons and incarnations are guesses",
			"event", typ.String())
	}
	// A member the region's pool already took out had its EventLeave:
	// its updates and this pool's own verdict are not news. A join is a
	// new life, whatever the region's pool said of the last one.
	told := m.regionDown[n.Name]
	if typ == EventLeave {
		delete(m.members, n.Name)
		delete(m.regionDown, n.Name)
		if ev.Reason == ReasonDead && !isSelf {
			m.failed[n.Name] = &failedMember{addr: mem.GossipAddr, since: time.Now()}
		} else {
			delete(m.failed, n.Name)
		}
	} else {
		m.members[n.Name] = mem
		delete(m.failed, n.Name)
		if typ == EventJoin {
			delete(m.regionDown, n.Name)
			told = false
		}
	}
	if isSelf {
		m.self = mem
	}
	if !told {
		m.queue.push(ev)
	}
	m.mu.Unlock()

	level := slog.LevelInfo
	if m.onlyRegion != "" || told {
		level = slog.LevelDebug // the cluster's view logs what matters
	}
	switch {
	case isSelf:
		m.log.Debug("self "+typ.String(), "addr", mem.GossipAddr, "incarnation", inc)
	case typ == EventJoin:
		m.log.Log(context.Background(), level, "member joined", "member", mem.ProxyID, "addr", mem.GossipAddr, "region", mem.Region)
	case typ == EventLeave:
		m.log.Log(context.Background(), level, "member gone", "member", mem.ProxyID, "addr", mem.GossipAddr, "reason", ev.Reason)
	default:
		m.log.Debug("member updated", "member", mem.ProxyID, "addr", mem.GossipAddr)
	}
}

// onRegionEvent applies the region's pool's verdict on a proxy of this
// region to the cluster's view. The pool probes only its region's
// proxies, with timings for a region, so it sees a death there first: the
// proxy is taken out of Members with its EventLeave at once, and comes
// back when it is alive in the region's pool again (it refuted a false
// verdict, or restarted), or when the cluster pool sees a new life.
// Events come through the pool's queue, after the fact: one the pool's
// current view contradicts is stale and ignored.
func (m *Membership) onRegionEvent(ev Event) {
	name := ev.Member.ProxyID
	if name == m.cfg.Meta.ProxyID || ev.Type == EventUpdate {
		return
	}
	inRegion := m.region.isMember(name)
	m.mu.Lock()
	mem, known := m.members[name]
	var out *Event
	switch {
	case ev.Type == EventLeave && !inRegion && known && !m.regionDown[name]:
		m.regionDown[name] = true
		mem.State = Dead
		if ev.Reason == ReasonLeft {
			mem.State = Left
		}
		out = &Event{Type: EventLeave, Member: mem, Reason: ev.Reason}
	case ev.Type == EventJoin && inRegion && m.regionDown[name]:
		delete(m.regionDown, name)
		if known {
			out = &Event{Type: EventJoin, Member: mem}
		}
	}
	if out != nil {
		m.queue.push(*out)
	}
	m.mu.Unlock()
	switch {
	case out == nil:
	case out.Type == EventLeave:
		m.log.Info("member gone", "member", name, "addr", mem.GossipAddr, "reason", out.Reason, "seen_by", "region pool")
	default:
		m.log.Info("member back", "member", name, "addr", mem.GossipAddr, "seen_by", "region pool")
	}
}

// regionSeeds are the region's pool's seeds: where the cluster pool's
// members of this region say their region pool is.
func (m *Membership) regionSeeds() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, mem := range m.members {
		if name != m.cfg.Meta.ProxyID && mem.Region == m.meta.Region && mem.RegionGossip != "" {
			out = append(out, mem.RegionGossip)
		}
	}
	slices.Sort(out)
	return out
}

// isMember reports whether name is alive (or suspect) in this pool.
func (m *Membership) isMember(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.members[name]
	return ok
}
