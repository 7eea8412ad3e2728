package gate

import (
	"net"
	"testing"
)

func TestGate(t *testing.T) {
	g := &Gate{Max: 3, MaxPerIP: 2}
	a := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}
	b := &net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 1}
	c := &net.TCPAddr{IP: net.ParseIP("127.0.0.3"), Port: 1}
	l1, r := g.Enter(a)
	l2, r2 := g.Enter(a)
	if r != "" || r2 != "" {
		t.Fatalf("first two from one address refused: %q %q", r, r2)
	}
	if _, r := g.Enter(a); r == "" {
		t.Fatal("a third from one address admitted with MaxPerIP 2")
	}
	lb, r := g.Enter(b)
	if r != "" {
		t.Fatalf("another address refused: %q", r)
	}
	if _, r := g.Enter(c); r == "" {
		t.Fatal("a fourth connection admitted with Max 3")
	}
	l1()
	l1() // twice is harmless
	if l, r := g.Enter(c); r != "" {
		t.Fatalf("a slot freed by leave was not reused: %q", r)
	} else {
		l()
	}
	l2()
	lb()
	if g.n != 0 || len(g.perIP) != 0 {
		t.Fatalf("counts after every leave: n=%d perIP=%v", g.n, g.perIP)
	}
}

func TestAddrKey(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 9}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 9}, "2001:db8:1:2::/64"},
	} {
		if got := AddrKey(tt.addr); got != tt.want {
			t.Errorf("AddrKey(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}
