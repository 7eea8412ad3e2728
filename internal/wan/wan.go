// Package wan emulates a wide-area network on one Linux machine, for tests
// and benchmarks that need real latency between real processes.
//
// Every host of a Topology gets its own network namespace, with one
// address (10.99.R.H: region R, host H) on a TUN device and a route for
// the whole 10.99.0.0/16 through it. The other end of every TUN device is
// this process: a packet a host sends is read here, held for the one-way
// delay of its pair of regions (plus jitter), dropped with the pair's
// loss, paced to the pair's rate behind a bounded queue, and written to
// the destination host's TUN device. So nothing in the hosts knows it is
// emulated: real TCP and UDP, real warren, ssh and sshd processes, run
// with Net.Command in a host's namespace. The test process itself has no
// address in the network: it opens sockets as a host with Do, and
// connections as a host with DialContext.
//
// The kernel here has no netem, tbf or fq; namespaces and TUN devices are
// all this needs (and root). Packets of one direction of one pair of
// regions leave in the order they came (jitter delays, never reorders),
// as on one path.
package wan

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one machine of the emulated network.
type Host struct {
	Name   string // unique, [a-z0-9-]
	Region string
}

// Link is the path from one region to another, one way.
type Link struct {
	Delay  time.Duration // one-way
	Jitter time.Duration // added to Delay, uniform in [0, Jitter)
	Loss   float64       // probability a packet is dropped, 0 to 1
	// Rate caps the bytes per second; 0 is no cap. Queue bounds the bytes
	// waiting for the cap (default 256 KiB); a packet beyond it is dropped,
	// as a router's tail drop.
	Rate  int64
	Queue int
}

// Topology is the hosts and the links between their regions.
type Topology struct {
	Hosts []Host
	// Inside is the link between two hosts of one region.
	Inside Link
	// Between holds the links between regions, by [from, to]; a missing
	// direction takes the other's, and a missing pair Default.
	Between map[[2]string]Link
	Default Link
	// MTU of every host's device (default 9000: fewer packets for the
	// emulator to carry, as on a data-center path).
	MTU int
}

// link returns the link from region a to region b.
func (t Topology) link(a, b string) Link {
	if a == b {
		return t.Inside
	}
	if l, ok := t.Between[[2]string{a, b}]; ok {
		return l
	}
	if l, ok := t.Between[[2]string{b, a}]; ok {
		return l
	}
	return t.Default
}

// Net is a running emulated network.
type Net struct {
	topo   Topology
	prefix string // namespace name prefix, unique to this process and Net
	hosts  map[string]*host
	byAddr map[[4]byte]*host
	paths  map[[2]string]*path
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu      sync.Mutex
	dropped map[string]int // by reason
}

type host struct {
	Host
	ns   string
	dev  string
	addr netip.Addr
	tun  *os.File
}

var netSeq struct {
	sync.Mutex
	n int
}

// New builds the network: namespaces, devices, addresses and routes, and
// starts carrying packets. Close removes all of it.
func New(topo Topology) (_ *Net, err error) {
	if topo.MTU == 0 {
		topo.MTU = 9000
	}
	if err := topo.check(); err != nil {
		return nil, err
	}
	netSeq.Lock()
	netSeq.n++
	seq := netSeq.n
	netSeq.Unlock()
	n := &Net{topo: topo, prefix: fmt.Sprintf("wan%d-%d-", os.Getpid(), seq),
		hosts: map[string]*host{}, byAddr: map[[4]byte]*host{}, paths: map[[2]string]*path{},
		stop: make(chan struct{}), dropped: map[string]int{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	regions := map[string]int{}
	inRegion := map[string]int{}
	for i, h := range topo.Hosts {
		r, ok := regions[h.Region]
		if !ok {
			r = len(regions) + 1
			regions[h.Region] = r
		}
		inRegion[h.Region]++
		// Device names are unique to this process and Net: they exist in
		// the machine's own namespace for a moment, beside other tests'.
		hh := &host{Host: h, ns: n.prefix + h.Name, dev: fmt.Sprintf("w%x-%x-%x", os.Getpid(), seq, i),
			addr: netip.AddrFrom4([4]byte{10, 99, byte(r), byte(inRegion[h.Region])})}
		n.hosts[h.Name] = hh
		n.byAddr[hh.addr.As4()] = hh
		if err := n.setUp(hh); err != nil {
			return nil, fmt.Errorf("wan: host %s: %w", h.Name, err)
		}
	}
	for ra := range regions {
		for rb := range regions {
			n.paths[[2]string{ra, rb}] = newPath(n, topo.link(ra, rb))
		}
	}
	for _, h := range n.hosts {
		n.wg.Add(1)
		go n.read(h)
	}
	return n, nil
}

// Unavailable reports whether err, from New, says that this machine
// cannot make network namespaces or TUN devices for this process (it is
// not root, or the kernel or container refuses): a test then skips,
// unless its environment requires the emulator (CI sets
// WARREN_REQUIRE_NETNS=1).
func Unavailable(err error) bool {
	return err != nil && (os.Geteuid() != 0 || strings.Contains(err.Error(), "netns add") || strings.Contains(err.Error(), "/dev/net/tun"))
}

func (t Topology) check() error {
	var errs []error
	if len(t.Hosts) == 0 || len(t.Hosts) > 250 {
		errs = append(errs, fmt.Errorf("%d hosts: want 1 to 250", len(t.Hosts)))
	}
	seen := map[string]bool{}
	regions := map[string]bool{}
	for _, h := range t.Hosts {
		if h.Name == "" || len(h.Name) > 20 || strings.Trim(h.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			errs = append(errs, fmt.Errorf("host name %q: want 1 to 20 of a-z, 0-9 and -", h.Name))
		}
		if seen[h.Name] {
			errs = append(errs, fmt.Errorf("host %q twice", h.Name))
		}
		seen[h.Name] = true
		if h.Region == "" {
			errs = append(errs, fmt.Errorf("host %q has no region", h.Name))
		}
		regions[h.Region] = true
	}
	if len(regions) > 250 {
		errs = append(errs, fmt.Errorf("%d regions: want at most 250", len(regions)))
	}
	for _, l := range append([]Link{t.Inside, t.Default}, slices.Collect(maps.Values(t.Between))...) {
		if l.Delay < 0 || l.Jitter < 0 || l.Loss < 0 || l.Loss > 1 || l.Rate < 0 || l.Queue < 0 {
			errs = append(errs, fmt.Errorf("link %+v: delays, rate and queue must not be negative, loss within 0 to 1", l))
		}
	}
	if t.MTU < 1280 || t.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU %d: want 1280 to 65535", t.MTU))
	}
	return errors.Join(errs...)
}

// setUp makes h's namespace and its TUN device, whose other end this
// process holds.
func (n *Net) setUp(h *host) error {
	if err := ip("netns", "add", h.ns); err != nil {
		return err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(h.dev)
	if err != nil {
		unix.Close(fd)
		return err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return fmt.Errorf("create TUN device %s: %w", h.dev, err)
	}
	// Non-blocking, so that the runtime's poller carries reads and Close
	// ends them.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	h.tun = os.NewFile(uintptr(fd), h.dev)
	for _, args := range [][]string{
		{"link", "set", h.dev, "netns", h.ns},
		{"-n", h.ns, "link", "set", "lo", "up"},
		{"-n", h.ns, "addr", "add", h.addr.String() + "/32", "dev", h.dev},
		{"-n", h.ns, "link", "set", h.dev, "mtu", fmt.Sprint(n.topo.MTU), "up"},
		{"-n", h.ns, "route", "add", "10.99.0.0/16", "dev", h.dev},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Addr is host's address.
func (n *Net) Addr(host string) netip.Addr { return n.mustHost(host).addr }

// Namespace is the name of host's network namespace (for `ip netns exec`).
func (n *Net) Namespace(host string) string { return n.mustHost(host).ns }

func (n *Net) mustHost(name string) *host {
	h, ok := n.hosts[name]
	if !ok {
		panic(fmt.Sprintf("wan: no host %q", name))
	}
	return h
}

// Command is a command that runs in host's namespace.
func (n *Net) Command(host, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.mustHost(host).ns, name}, args...)...)
}

// Do runs f on a thread that is in host's namespace: the sockets f opens
// (net.Dial, net.Listen) are the host's, and stay so after f returns.
func (n *Net) Do(host string, f func() error) error {
	h := n.mustHost(host)
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + h.ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", h.ns, err)
	}
	defer func() {
		// A thread that cannot go back stays locked, so it ends with the
		// goroutine instead of serving others in the wrong namespace.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return f()
}

// DialContext connects to addr from host, as Do would: the socket is the
// host's, so the connection crosses the emulated network as the host's own
// would, and to the host's own address it stays on the host. addr's host
// must be an IP address: a name's lookup, and parallel dials to several
// addresses, may run on other threads, in another namespace.
func (n *Net) DialContext(ctx context.Context, host, network, addr string) (net.Conn, error) {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("wan: dial %s from %s: %w", addr, host, err)
	}
	if _, err := netip.ParseAddr(h); err != nil {
		return nil, fmt.Errorf("wan: dial %s from %s: want an IP address, not a name", addr, host)
	}
	var c net.Conn
	err = n.Do(host, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Dropped returns the packets dropped so far, by reason (loss, queue,
// unknown destination).
func (n *Net) Dropped() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.dropped))
	for k, v := range n.dropped {
		out[k] = v
	}
	return out
}

func (n *Net) drop(reason string) {
	n.mu.Lock()
	n.dropped[reason]++
	n.mu.Unlock()
}

// Close stops carrying packets and removes every device and namespace.
func (n *Net) Close() error {
	var errs []error
	n.once.Do(func() {
		close(n.stop)
		for _, h := range n.hosts {
			if h.tun != nil {
				h.tun.Close() // the device goes with its last file
			}
		}
		n.wg.Wait()
		for _, h := range n.hosts {
			if err := ip("netns", "del", h.ns); err != nil && !strings.Contains(err.Error(), "No such file") {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// read carries the packets h sends.
func (n *Net) read(h *host) {
	defer n.wg.Done()
	buf := make([]byte, 65536)
	for {
		k, err := h.tun.Read(buf)
		if err != nil {
			return
		}
		pkt := buf[:k]
		if k < 20 || pkt[0]>>4 != 4 {
			n.drop("not IPv4") // IPv6 router solicitations and the like
			continue
		}
		dst, ok := n.byAddr[[4]byte(pkt[16:20])]
		if !ok {
			n.drop("unknown destination")
			continue
		}
		n.paths[[2]string{h.Region, dst.Region}].send(dst, append([]byte(nil), pkt...))
	}
}

// path carries the packets of one direction between two regions: loss,
// then the rate's queue, then the delay; in order.
type path struct {
	n    *Net
	link Link

	mu        sync.Mutex
	busyUntil time.Time // when the rate has sent what is queued
	lastAt    time.Time // when the last packet queued is delivered
	queue     []delivery
	wake      chan struct{}
	late      time.Duration // how late sleeps end, on average (run's alone)
}

type delivery struct {
	at  time.Time
	dst *host
	pkt []byte
}

func newPath(n *Net, l Link) *path {
	if l.Queue == 0 {
		l.Queue = 256 << 10
	}
	p := &path{n: n, link: l, wake: make(chan struct{}, 1)}
	n.wg.Add(1)
	go p.run()
	return p
}

func (p *path) send(dst *host, pkt []byte) {
	l := p.link
	if l.Loss > 0 && rand.Float64() < l.Loss {
		p.n.drop("loss")
		return
	}
	now := time.Now()
	p.mu.Lock()
	depart := now
	if l.Rate > 0 {
		if p.busyUntil.After(now) {
			backlog := int64(p.busyUntil.Sub(now).Seconds() * float64(l.Rate))
			if backlog+int64(len(pkt)) > int64(l.Queue) {
				p.mu.Unlock()
				p.n.drop("queue")
				return
			}
			depart = p.busyUntil
		}
		depart = depart.Add(time.Duration(float64(len(pkt)) / float64(l.Rate) * float64(time.Second)))
		p.busyUntil = depart
	}
	at := depart.Add(l.Delay)
	if l.Jitter > 0 {
		at = at.Add(rand.N(l.Jitter))
	}
	if at.Before(p.lastAt) {
		at = p.lastAt // jitter delays; it never reorders
	}
	p.lastAt = at
	p.queue = append(p.queue, delivery{at: at, dst: dst, pkt: pkt})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// sleepUntil returns at t, as near as this machine allows. A sleep ends
// late, the more so the longer it was (0.2 ms after 5 ms, 0.6 ms after
// 60 ms on the 2-core VM of bench/RESULTS.md: deeper idle states), and a
// late packet adds to the configured delay. So it sleeps for the wait
// less how late sleeps have been ending (a moving average), then spins
// through what is left, which is the average's error, not the lateness.
func (p *path) sleepUntil(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	if s := d - p.late; s > 0 {
		planned := time.Now().Add(s)
		ts := unix.NsecToTimespec(s.Nanoseconds())
		for unix.Nanosleep(&ts, &ts) == unix.EINTR {
		}
		late := min(max(time.Since(planned), 0), 2*time.Millisecond)
		p.late += (late - p.late) / 8
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// run delivers queued packets when their time comes. A path's packets
// are due in the order they were queued, so it sleeps until the first is
// due with nanosleep: the runtime's timers may fire up to a millisecond
// late (its poller waits in milliseconds), which would add to every
// delay. A packet queued meanwhile is due no sooner than the first.
func (p *path) run() {
	defer p.n.wg.Done()
	for {
		p.mu.Lock()
		var at time.Time
		if len(p.queue) > 0 {
			at = p.queue[0].at
		}
		p.mu.Unlock()
		if at.IsZero() {
			select {
			case <-p.n.stop:
				return
			case <-p.wake:
			}
			continue
		}
		p.sleepUntil(at)
		select {
		case <-p.n.stop:
			return
		default:
		}
		p.mu.Lock()
		now := time.Now()
		i := 0
		for i < len(p.queue) && !p.queue[i].at.After(now) {
			i++
		}
		due := slices.Clone(p.queue[:i])
		p.queue = p.queue[i:]
		p.mu.Unlock()
		for _, d := range due {
			// A full device queue drops, as a congested link would.
			if _, err := d.dst.tun.Write(d.pkt); err != nil {
				p.n.drop("device")
			}
		}
	}
}
