package membership

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/warren-proxy/warren/internal/model"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// logRecorder is a slog handler that keeps records for assertions (and
// prints them with -v). It never calls t.Log: memberlist goroutines may
// still log a moment after a test ends.
type logRecorder struct {
	name  string
	attrs []slog.Attr
	rec   *records
}

type records struct {
	mu   sync.Mutex
	list []string
}

func newLogger(name string) (*slog.Logger, *records) {
	r := &records{}
	return slog.New(&logRecorder{name: name, rec: r}), r
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", h.name, r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	line := b.String()
	h.rec.mu.Lock()
	h.rec.list = append(h.rec.list, line)
	h.rec.mu.Unlock()
	if testing.Verbose() && (r.Level > slog.LevelDebug || os.Getenv("MEMBERSHIP_DEBUG") != "") {
		fmt.Fprintln(os.Stderr, r.Time.Format("15:04:05.000"), line)
	}
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{name: h.name, attrs: append(append([]slog.Attr(nil), h.attrs...), as...), rec: h.rec}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

func (r *records) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.list, "\n")
}

// find returns the first line at level or above containing every part.
func (r *records) find(level slog.Level, parts ...string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.list {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		var lv slog.Level
		if lv.UnmarshalText([]byte(f[1])) != nil || lv < level {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return l
		}
	}
	return ""
}

// node is one Membership under test, with its events collected.
type node struct {
	*Membership
	name string
	logs *records

	mu     sync.Mutex
	events []Event
	cond   *sync.Cond
	done   chan struct{} // collector finished
}

type nodeOpt func(*Config)

func withSeeds(seeds ...string) nodeOpt { return func(c *Config) { c.Seeds = seeds } }
func withKey(k []byte) nodeOpt          { return func(c *Config) { c.SecretKey = k } }
func withProfile(p string) nodeOpt      { return func(c *Config) { c.Profile = p } }
func withState(s StateDelegate) nodeOpt { return func(c *Config) { c.State = s } }
func withBind(addr string) nodeOpt      { return func(c *Config) { c.BindAddr = addr } }

// newNode makes a node called id on ip (port 0) with the local profile and
// the test key; Start is left to the caller (start). Close runs in cleanup.
func newNode(t *testing.T, id, ip string, opts ...nodeOpt) *node {
	t.Helper()
	log, recs := newLogger(id)
	cfg := Config{
		Meta: Meta{
			ProxyID: id, Region: "eu", Zone: "a", Version: "test",
			TunnelAddr: ip + ":3024", PeerAddr: ip + ":3021", UserAddr: ip + ":3023", HTTPAddr: ip + ":3080",
		},
		BindAddr:       ip + ":0",
		SecretKey:      testKey,
		Profile:        model.ProfileLocal,
		RejoinInterval: 200 * time.Millisecond,
		Logger:         log,
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", id, err)
	}
	n := &node{Membership: m, name: id, logs: recs, done: make(chan struct{})}
	n.cond = sync.NewCond(&n.mu)
	go n.collect()
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close(%s): %v", id, err)
		}
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Events not closed 10s after Close", id)
		}
	})
	return n
}

func (n *node) collect() {
	defer close(n.done)
	for e := range n.Events() {
		n.mu.Lock()
		n.events = append(n.events, e)
		n.cond.Broadcast()
		n.mu.Unlock()
	}
}

func (n *node) start(t *testing.T) *node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start(%s): %v", n.name, err)
	}
	return n
}

// waitEvent waits for an event matching ok and returns it.
func (n *node) waitEvent(t *testing.T, what string, timeout time.Duration, ok func(Event) bool) Event {
	t.Helper()
	var got Event
	if !waitFor(timeout, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, e := range n.events {
			if ok(e) {
				got = e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("%s: no %s within %v; events: %v", n.name, what, timeout, n.eventList())
	}
	return got
}

func (n *node) eventList() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, e := range n.events {
		s := e.Type.String() + ":" + e.Member.ProxyID
		if e.Reason != "" {
			s += "(" + e.Reason + ")"
		}
		out = append(out, s)
	}
	return out
}

func isEvent(typ EventType, id, reason string) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && e.Member.ProxyID == id && e.Reason == reason }
}

// memberIDs returns the ProxyIDs n sees, in order.
func (n *node) memberIDs() []string {
	var ids []string
	for _, m := range n.Members() {
		ids = append(ids, m.ProxyID)
	}
	return ids
}

// waitMembers waits until n sees exactly ids.
func (n *node) waitMembers(t *testing.T, timeout time.Duration, ids ...string) {
	t.Helper()
	want := strings.Join(ids, ",")
	if !waitFor(timeout, func() bool { return strings.Join(n.memberIDs(), ",") == want }) {
		t.Fatalf("%s: members %v, want %v (after %v)", n.name, n.memberIDs(), ids, timeout)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkGoroutines fails t if, after cleanup, more goroutines run than
// before the test (bounded wait: memberlist's loops end a probe interval
// after Shutdown). Register it first so that it runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var now int
		if !waitFor(10*time.Second, func() bool { now = runtime.NumGoroutine(); return now <= before }) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: %d before, %d 10s after Close:\n%s", before, now, buf)
		}
	})
}

// cluster starts n nodes on 127.0.0.1..n, all seeded with the first.
func cluster(t *testing.T, count int, opts ...nodeOpt) []*node {
	t.Helper()
	var nodes []*node
	var ids []string
	for i := range count {
		o := opts
		if i > 0 {
			o = append([]nodeOpt{withSeeds(nodes[0].GossipAddr())}, opts...)
		}
		id := fmt.Sprintf("p%d", i+1)
		nodes = append(nodes, newNode(t, id, fmt.Sprintf("127.0.0.%d", i+1), o...).start(t))
		ids = append(ids, id)
	}
	for _, n := range nodes {
		n.waitMembers(t, 15*time.Second, ids...)
	}
	return nodes
}

// cutTransport is memberlist's NetTransport with a switch that cuts this
// node off the network both ways, like a partition.
type cutTransport struct {
	*memberlist.NetTransport
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup

	mu  sync.Mutex
	cut bool
}

func (c *cutTransport) isCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

func (c *cutTransport) setCut(v bool) {
	c.mu.Lock()
	c.cut = v
	c.mu.Unlock()
}

// withCutTransport installs a cutTransport (and, if reap > 0, makes
// memberlist forget dead members after reap) and returns it once Start
// has built it.
func withCutTransport(t *testing.T, n *node, reap time.Duration) func() *cutTransport {
	var ct *cutTransport
	ip := strings.Split(n.cfg.BindAddr, ":")[0]
	n.tweak = func(c *memberlist.Config) {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip}, BindPort: 0, Logger: c.Logger,
		})
		if err != nil {
			t.Errorf("transport: %v", err)
			return
		}
		ct = &cutTransport{
			NetTransport: nt,
			packets:      make(chan *memberlist.Packet),
			streams:      make(chan net.Conn),
			stop:         make(chan struct{}),
		}
		ct.wg.Add(2)
		go ct.pump()
		c.Transport = ct
		c.BindPort = nt.GetAutoBindPort()
		c.AdvertisePort = c.BindPort
		if reap > 0 {
			c.GossipToTheDeadTime = reap
		}
	}
	return func() *cutTransport { return ct }
}

func (c *cutTransport) pump() {
	go func() {
		defer c.wg.Done()
		for {
			select {
			case p := <-c.NetTransport.PacketCh():
				if c.isCut() {
					continue
				}
				select {
				case c.packets <- p:
				case <-c.stop:
					return
				}
			case <-c.stop:
				return
			}
		}
	}()
	defer c.wg.Done()
	for {
		select {
		case conn := <-c.NetTransport.StreamCh():
			if c.isCut() {
				conn.Close()
				continue
			}
			select {
			case c.streams <- conn:
			case <-c.stop:
				conn.Close()
				return
			}
		case <-c.stop:
			return
		}
	}
}

func (c *cutTransport) PacketCh() <-chan *memberlist.Packet { return c.packets }
func (c *cutTransport) StreamCh() <-chan net.Conn           { return c.streams }

func (c *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if c.isCut() {
		return time.Now(), nil // lost on the way
	}
	return c.NetTransport.WriteToAddress(b, a)
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return c.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (c *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if c.isCut() {
		return nil, fmt.Errorf("dial %s: network unreachable (test cut)", a.Addr)
	}
	return c.NetTransport.DialAddressTimeout(a, timeout)
}

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return c.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (c *cutTransport) Shutdown() error {
	err := c.NetTransport.Shutdown()
	close(c.stop)
	c.wg.Wait()
	return err
}
