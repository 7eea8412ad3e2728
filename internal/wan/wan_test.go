package wan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/echo"
)

// newNet builds topo for a test, or skips when this machine cannot make
// network namespaces; with WARREN_REQUIRE_NETNS=1 (CI) it fails instead.
func newNet(t *testing.T, topo Topology) *Net {
	t.Helper()
	n, err := New(topo)
	if err != nil {
		if os.Getenv("WARREN_REQUIRE_NETNS") == "" && Unavailable(err) {
			t.Skipf("no network namespaces or TUN devices here (needs root): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func twoRegions(l Link) Topology {
	return Topology{
		Hosts:   []Host{{"us-1", "us"}, {"us-2", "us"}, {"eu-1", "eu"}},
		Inside:  Link{Delay: time.Millisecond},
		Between: map[[2]string]Link{{"us", "eu"}: l},
	}
}

// echoServer listens on host's address and echoes every connection.
func echoServer(t *testing.T, n *Net, host string) string {
	t.Helper()
	var ln net.Listener
	if err := n.Do(host, func() (err error) {
		ln, err = net.Listen("tcp", n.Addr(host).String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); echo.Serve(ln, nil) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func dial(n *Net, from, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.DialContext(ctx, from, "tcp", addr)
}

// rtts measures k one-byte round trips over c.
func rtts(t *testing.T, c net.Conn, k int) []time.Duration {
	t.Helper()
	var out []time.Duration
	b := []byte{1}
	for range k {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}

// The emulator is honest: no round trip is shorter than the links'
// delays, no transfer beats the rate cap; the measured figures are logged
// beside the configuration.
func TestDelayAndRateHold(t *testing.T) {
	between := Link{Delay: 20 * time.Millisecond, Rate: 4 << 20, Queue: 128 << 10}
	n := newNet(t, twoRegions(between))
	echo := echoServer(t, n, "eu-1")
	local := echoServer(t, n, "us-2")
	for _, c := range []struct {
		from, to, addr string
		oneWay         time.Duration
	}{{"us-1", "eu-1", echo, 20 * time.Millisecond}, {"us-1", "us-2", local, time.Millisecond}} {
		conn, err := dial(n, c.from, c.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("%s → %s: %v", c.from, c.to, err)
		}
		rt := rtts(t, conn, 20)
		if rt[0] < 2*c.oneWay {
			t.Errorf("%s ↔ %s: a round trip of %s, shorter than the configured 2×%s", c.from, c.to, rt[0], c.oneWay)
		}
		t.Logf("%s ↔ %s: configured RTT %s, measured min %s p50 %s max %s", c.from, c.to, 2*c.oneWay,
			rt[0].Round(10*time.Microsecond), rt[len(rt)/2].Round(10*time.Microsecond), rt[len(rt)-1].Round(10*time.Microsecond))
		conn.Close()
	}

	// 2 MiB up to eu-1 and back, at most 4 MiB/s each way: it cannot take
	// less than (size - queue) / rate.
	conn, err := dial(n, "us-1", echo, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const size = 2 << 20
	start := time.Now()
	go func() { conn.Write(make([]byte, size)) }()
	if _, err := io.CopyN(io.Discard, conn, size); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	floor := time.Duration(float64(size-between.Queue) / float64(between.Rate) * float64(time.Second))
	if took < floor {
		t.Errorf("2 MiB echoed through a 4 MiB/s link in %s, faster than the cap allows (%s)", took, floor)
	}
	t.Logf("2 MiB echoed us-1 ↔ eu-1 in %s: %.1f MiB/s against a cap of 4 MiB/s; drops %v", took.Round(time.Millisecond), float64(size)/took.Seconds()/(1<<20), n.Dropped())
}

// A real process in one namespace reaches a listener in another through
// the emulator; a link with total loss carries nothing, while the region
// inside still works.
func TestRealProcessesAndLoss(t *testing.T) {
	n := newNet(t, twoRegions(Link{Delay: 5 * time.Millisecond, Loss: 1}))
	local := echoServer(t, n, "us-2")
	far := echoServer(t, n, "eu-1")
	host, port, _ := net.SplitHostPort(local)
	cmd := n.Command("us-1", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s; echo hi >&3; head -n1 <&3", host, port))
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("bash in us-1 to us-2's echo: %q, %v", out, err)
	}
	if _, err := dial(n, "us-1", far, time.Second); err == nil {
		t.Fatal("a connection crossed a link that loses every packet")
	}
	if n.Dropped()["loss"] == 0 {
		t.Errorf("no packet counted as lost: %v", n.Dropped())
	}
	// The host's own view: one address, routes through the emulator.
	addrs, err := n.Command("eu-1", "ip", "-4", "-o", "addr", "show").Output()
	if err != nil || !strings.Contains(string(addrs), n.Addr("eu-1").String()+"/32") {
		t.Errorf("eu-1's addresses: %s %v", addrs, err)
	}
}

// DialContext's connections are the host's: one to a host of another
// region takes the link's delay, one to the host's own address stays on
// it, and one over a link that loses everything ends with its context.
func TestDialContext(t *testing.T) {
	n := newNet(t, Topology{
		Hosts:   []Host{{"us-1", "us"}, {"eu-1", "eu"}, {"ap-1", "ap"}},
		Between: map[[2]string]Link{{"us", "eu"}: {Delay: 10 * time.Millisecond}, {"eu", "ap"}: {Loss: 1}},
	})
	far := echoServer(t, n, "eu-1")
	for _, from := range []string{"us-1", "eu-1"} {
		c, err := dial(n, from, far, 5*time.Second)
		if err != nil {
			t.Fatalf("%s → eu-1: %v", from, err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != n.Addr(from).String() {
			t.Errorf("%s → eu-1: local address %s, want %s's %s", from, got, from, n.Addr(from))
		}
		rt := rtts(t, c, 3)
		c.Close()
		switch {
		case from == "us-1" && rt[0] < 20*time.Millisecond:
			t.Errorf("us-1 ↔ eu-1: a round trip of %s, shorter than the link's 2×10ms", rt[0])
		case from == "eu-1" && rt[len(rt)-1] >= 20*time.Millisecond:
			t.Errorf("eu-1 to itself: a round trip of %s, as if it had crossed a link", rt[len(rt)-1])
		}
	}
	// The test process itself has no route to the emulated network.
	if c, err := net.DialTimeout("tcp", far, 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("the test's own namespace reached %s", far)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// The deadline is the context's; net reports it as the context's error
	// or, when it struck inside the connect call, as the socket's i/o
	// timeout (seen under CI load).
	var ne net.Error
	if _, err := n.DialContext(ctx, "ap-1", "tcp", far); !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("ap-1 → eu-1 over a link with total loss: got %v, want a timeout at the context's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the dial ended %s after its 300ms deadline", took)
	}
	if _, err := n.DialContext(context.Background(), "us-1", "tcp", "localhost:1"); err == nil || !strings.Contains(err.Error(), "IP address") {
		t.Errorf("a dial to a name: got %v, want a refusal asking for an IP address", err)
	}
}

// Close leaves no namespace and no device behind.
func TestCloseLeavesNothing(t *testing.T) {
	n := newNet(t, twoRegions(Link{Delay: time.Millisecond}))
	names := []string{n.Namespace("us-1"), n.Namespace("us-2"), n.Namespace("eu-1")}
	var devs []string
	for _, h := range n.hosts {
		devs = append(devs, h.dev)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		for _, name := range names {
			if strings.HasPrefix(sc.Text(), name+" ") || sc.Text() == name {
				t.Errorf("namespace %s left behind", name)
			}
		}
	}
	for _, d := range devs {
		if out, err := exec.Command("ip", "link", "show", "dev", d).CombinedOutput(); err == nil {
			t.Errorf("device %s left behind: %s", d, out)
		}
	}
}

func TestTopologyIsChecked(t *testing.T) {
	for _, topo := range []Topology{
		{},
		{Hosts: []Host{{"Bad Name", "us"}}},
		{Hosts: []Host{{"a", "us"}, {"a", "us"}}},
		{Hosts: []Host{{"a", ""}}},
		{Hosts: []Host{{"a", "us"}}, Inside: Link{Loss: 2}},
		{Hosts: []Host{{"a", "us"}}, MTU: 100},
	} {
		if _, err := New(topo); err == nil {
			t.Errorf("topology %+v accepted", topo)
		}
	}
}
