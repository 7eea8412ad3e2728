// Package gate bounds the connections a listener holds before they
// authenticate: overall and per client address, so that idle or slow
// connections from one address cannot take every slot, and a flood from
// many cannot take the process's memory.
package gate

import (
	"net"
	"sync"
)

// Gate counts connections in their handshake. Safe for concurrent use.
type Gate struct {
	Max, MaxPerIP int

	mu    sync.Mutex // guards the fields below
	n     int
	perIP map[string]int
}

// The refusals Enter gives: the overall cap (Max) is full, or the cap
// for the connection's address (MaxPerIP).
const (
	RefusedOverall = "too many connections are logging in to this proxy"
	RefusedPerIP   = "too many connections from your address are logging in"
)

// Enter admits a connection from addr, or says why not ("" when admitted):
// RefusedOverall or RefusedPerIP.
// An admitted connection must call the returned leave once, when its
// handshake ends.
func (g *Gate) Enter(addr net.Addr) (leave func(), refusal string) {
	key := AddrKey(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.n >= g.Max:
		return nil, RefusedOverall
	case g.perIP[key] >= g.MaxPerIP:
		return nil, RefusedPerIP
	}
	if g.perIP == nil {
		g.perIP = map[string]int{}
	}
	g.n++
	g.perIP[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.n--
			if g.perIP[key]--; g.perIP[key] <= 0 {
				delete(g.perIP, key)
			}
		})
	}, ""
}

// AddrKey is what MaxPerIP counts by: the IP, or for IPv6 its /64, since
// one host is normally given a whole /64 and could otherwise use a fresh
// address per connection.
func AddrKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
