package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/transport/revtunnel"
)

func proxyInfos(ids ...string) []revtunnel.ProxyInfo {
	out := make([]revtunnel.ProxyInfo, len(ids))
	for i, id := range ids {
		out[i] = revtunnel.ProxyInfo{ID: id, TunnelAddr: id + ":3024", Zone: "zone-" + id}
	}
	return out
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestDirectoryClaim(t *testing.T) {
	d := newDirectory("", []string{"seed:3024"}, newHomeRule(time.Second))
	if err := d.claim("peer-0", "p1"); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if got := d.holders(); len(got) != 0 {
		t.Errorf("holders before the tunnel is up: %v, want none", got)
	}
	err := d.claim("peer-1", "p1")
	if !errors.Is(err, errTaken) {
		t.Fatalf("second slot's claim on a held proxy: got %v, want errTaken", err)
	}
	if err := d.claim("peer-0", "p1"); err != nil {
		t.Errorf("a slot claiming its own proxy again: %v", err)
	}
	d.up("peer-0", time.Time{})
	if got := d.holders(); !slices.Equal(got, []string{"p1"}) {
		t.Errorf("holders: %v, want [p1]", got)
	}
	d.release("peer-0")
	if err := d.claim("peer-1", "p1"); err != nil {
		t.Errorf("claim after the holder released: %v", err)
	}
}

func TestDirectoryChanges(t *testing.T) {
	d := newDirectory("", []string{"seed:3024"}, newHomeRule(time.Second))
	ch := d.changes()
	if !d.update(proxyInfos("p1")) || !closed(ch) {
		t.Fatal("a new proxy set did not signal a change")
	}
	ch = d.changes()
	if closed(ch) {
		t.Fatal("the channel after a change is already closed")
	}
	if d.update(proxyInfos("p1")) || closed(ch) {
		t.Error("the same proxy set again signalled a change")
	}
	if !d.update(proxyInfos("p1", "p2")) || !closed(ch) {
		t.Error("a joined proxy did not signal a change")
	}
}

func TestDirectoryPick(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	t.Run("seeds in turn while no set is known", func(t *testing.T) {
		d := newDirectory("", []string{"a:1", "b:1"}, newHomeRule(time.Second))
		seen := map[string]bool{}
		for range 4 {
			seen[d.pick("peer-0", now)] = true
		}
		if !seen["a:1"] || !seen["b:1"] || len(seen) != 2 {
			t.Errorf("picked %v, want both seeds", seen)
		}
	})
	t.Run("the first seeds first", func(t *testing.T) {
		// Two slots of a starting agent in ap, whose config lists ap's
		// proxies first: both tunnels go to its region. (They once went
		// to the second and the third seed: one to another region.)
		d := newDirectory("ap", []string{"ap1:3024", "ap2:3024", "us1:3024", "us2:3024"}, newHomeRule(time.Second))
		got := []string{d.pick("peer-0", now), d.pick("peer-1", now)}
		if !slices.Equal(got, []string{"ap1:3024", "ap2:3024"}) {
			t.Errorf("picked %v, want [ap1:3024 ap2:3024]", got)
		}
	})
	t.Run("nothing while every proxy is held by another slot", func(t *testing.T) {
		d := newDirectory("", []string{"p1:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1"))
		d.claim("peer-0", "p1")
		if got := d.pick("peer-1", now); got != "" {
			t.Errorf("peer-1 picked %q, want nothing (p1 is peer-0's)", got)
		}
		// Not even a seed that is an unknown address (a load balancer):
		// the set is what the proxies say is there.
		d = newDirectory("", []string{"lb:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1"))
		d.claim("peer-0", "p1")
		if got := d.pick("peer-1", now); got != "" {
			t.Errorf("peer-1 picked %q behind a balancer, want nothing", got)
		}
		if got := d.pick("peer-0", now); got != "p1:3024" {
			t.Errorf("the holder itself picked %q, want its own p1:3024", got)
		}
	})
	t.Run("a free proxy, not a held one", func(t *testing.T) {
		d := newDirectory("", []string{"lb:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1", "p2", "p3"))
		d.claim("peer-0", "p2")
		for range 6 {
			if got := d.pick("peer-1", now); got == "p2:3024" || got == "" {
				t.Fatalf("peer-1 picked %q, want p1 or p3", got)
			}
		}
	})
	t.Run("failed proxies avoided, by id or by address, for a while", func(t *testing.T) {
		d := newDirectory("", []string{"p1:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1", "p2", "p3"))
		d.fail("p1", now)      // its tunnel went down
		d.fail("p2:3024", now) // a dial to its address failed
		for range 6 {
			if got := d.pick("peer-0", now.Add(time.Second)); got != "p3:3024" {
				t.Fatalf("picked %q, want p3:3024, the one that did not fail", got)
			}
		}
		seen := map[string]bool{}
		for range 6 {
			seen[d.pick("peer-0", now.Add(failMemory+time.Second))] = true
		}
		if len(seen) != 3 {
			t.Errorf("after failMemory picked %v, want all three again", seen)
		}
	})
	t.Run("a balancer seed when every free proxy failed lately", func(t *testing.T) {
		d := newDirectory("", []string{"lb:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1", "p2"))
		d.claim("peer-0", "p1")
		d.fail("p2:3024", now) // its own address does not answer from here
		if got := d.pick("peer-1", now.Add(time.Second)); got != "lb:3024" {
			t.Errorf("picked %q, want the balancer lb:3024", got)
		}
		d.fail("lb:3024", now.Add(time.Second))
		if got := d.pick("peer-1", now.Add(2*time.Second)); got != "p2:3024" {
			t.Errorf("with the balancer failing too, picked %q, want p2:3024", got)
		}
		// A seed that is a known proxy's address is no way around it.
		d = newDirectory("", []string{"p2:3024"}, newHomeRule(time.Second))
		d.update(proxyInfos("p1", "p2"))
		d.claim("peer-0", "p1")
		d.fail("p2", now)
		if got := d.pick("peer-1", now.Add(time.Second)); got != "p2:3024" {
			t.Errorf("picked %q, want p2:3024", got)
		}
	})
	t.Run("region first, then an unused zone", func(t *testing.T) {
		d := newDirectory("eu", []string{"seed:1"}, newHomeRule(time.Second))
		d.update([]revtunnel.ProxyInfo{
			{ID: "us1", Region: "us", Zone: "a", TunnelAddr: "us1:1"},
			{ID: "eu1", Region: "eu", Zone: "a", TunnelAddr: "eu1:1"},
			{ID: "eu2", Region: "eu", Zone: "a", TunnelAddr: "eu2:1"},
			{ID: "eu3", Region: "eu", Zone: "b", TunnelAddr: "eu3:1"},
		})
		d.claim("peer-0", "eu1")
		for range 8 {
			if got := d.pick("peer-1", now); got != "eu3:1" {
				t.Fatalf("picked %q, want eu3:1 (the agent's region, a zone peer-0 does not use)", got)
			}
		}
	})
}

// world is a fake network for the directory: live proxies, and a load
// balancer address that lands on each live proxy in turn. Like a real
// proxy, each routes to the last tunnel that said hello to it (router
// TunnelUp), superseding the one before.
type world struct {
	live  []string
	turn  int
	dials int
	// routes: proxy → the slot whose tunnel it routes to.
	routes map[string]string
}

const balancer = "lb:3024"

// reach returns the proxy a dial of addr lands on, or "" if none answers.
func (w *world) reach(addr string) string {
	w.dials++
	if addr == balancer {
		if len(w.live) == 0 {
			return ""
		}
		w.turn++
		return w.live[w.turn%len(w.live)]
	}
	for _, id := range w.live {
		if addr == id+":3024" {
			return id
		}
	}
	return ""
}

// dial is the first half of one attempt of a slot without a tunnel, as
// conn.run makes it: pick and dial. It returns the proxy reached, or what
// happened instead ("wait", "failed").
func (w *world) dial(d *directory, slot string, now time.Time) (id, result string) {
	addr := d.pick(slot, now)
	if addr == "" {
		return "", "wait"
	}
	if id = w.reach(addr); id == "" {
		d.fail(addr, now)
		return "", "failed"
	}
	return id, ""
}

// hello is the second half: the claim before the hello, the hello (the
// proxy routes to this tunnel now), and the proxy set of its reply.
func (w *world) hello(d *directory, slot, id string) string {
	if err := d.claim(slot, id); err != nil {
		return "taken"
	}
	if prev := w.routes[id]; prev != "" && prev != slot && d.held[prev].id == id {
		return "superseded " + prev
	}
	w.routes[id] = slot
	d.up(slot, time.Time{})
	d.update(proxyInfos(w.live...))
	return "up"
}

// TestDirectorySlots runs slots against proxies that come and go, behind a
// load balancer and by their own addresses. The slots dial together, as
// they do when the agent starts or the set changes; no hello ever goes to
// a proxy another slot holds (it would supersede that slot's tunnel), the
// slots hold min(slots, live proxies) tunnels once settled, and a slot
// with no proxy of its own waits instead of dialing.
func TestDirectorySlots(t *testing.T) {
	for _, seeds := range [][]string{{balancer}, {"p1:3024"}} {
		t.Run(fmt.Sprint(seeds), func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			d := newDirectory("", seeds, newHomeRule(time.Second))
			w := &world{live: []string{"p1"}, routes: map[string]string{}}
			slots := []string{"peer-0", "peer-1", "peer-2"}
			// settle runs the slots without a tunnel until each is up or
			// waits, for at most 20 rounds: in each, all of them dial,
			// then each says hello where its dial landed.
			settle := func(what string) {
				t.Helper()
				for round := 0; round < 20; round++ {
					reached := map[string]string{}
					busy := false
					for _, s := range slots {
						if d.held[s].up {
							continue
						}
						id, r := w.dial(d, s, now)
						if id != "" {
							reached[s] = id
						}
						busy = busy || r == "failed"
					}
					for _, s := range slots {
						if id, ok := reached[s]; ok {
							r := w.hello(d, s, id)
							if strings.HasPrefix(r, "superseded") {
								t.Fatalf("%s: %s said hello to %s and %s", what, s, id, r)
							}
							busy = busy || r != "up"
						}
					}
					now = now.Add(time.Second)
					if !busy {
						break
					}
				}
				want := min(len(slots), len(w.live))
				if hs := d.holders(); len(hs) != want || len(slices.Compact(slices.Clone(hs))) != want {
					t.Fatalf("%s: slots hold %v, want %d distinct proxies of %v", what, hs, want, w.live)
				}
				// Settled: a slot without a proxy dials nothing.
				dials := w.dials
				for _, s := range slots {
					if !d.held[s].up {
						if _, r := w.dial(d, s, now); r != "wait" {
							t.Fatalf("%s: an idle slot dialed (%q), want it to wait", what, r)
						}
					}
				}
				if w.dials != dials {
					t.Errorf("%s: idle slots dialed %d times", what, w.dials-dials)
				}
			}
			settle("one proxy")

			w.live = []string{"p1", "p2"}
			d.update(proxyInfos(w.live...))
			settle("p2 joined")

			// p1 goes: its slot's tunnel ends, the set drops it.
			for s, h := range d.held {
				if h.id == "p1" {
					d.release(s)
					d.fail("p1", now)
				}
			}
			w.live = []string{"p2"}
			d.update(proxyInfos(w.live...))
			settle("p1 gone")

			w.live = []string{"p2", "p3", "p4", "p5"}
			d.update(proxyInfos(w.live...))
			settle("three more")
		})
	}
}

// TestDirectoryAvoidsALeavingProxy: a proxy that said it is shutting down
// is not picked, by id nor as a seed address, even when a newer proxy set
// (from a proxy that has not seen it leave) still lists it, until
// leaveMemory has passed; with no other proxy, the slot waits.
func TestDirectoryAvoidsALeavingProxy(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDirectory("", []string{"p1:3024"}, newHomeRule(time.Second))
	d.update(proxyInfos("p1", "p2"))
	d.left(now, "p1", "p1:3024")
	for i := range 4 {
		if got := d.pick("peer-0", now); got != "p2:3024" {
			t.Fatalf("pick %d with p1 leaving: %q, want p2:3024", i, got)
		}
	}
	if err := d.claim("peer-1", "p2"); err != nil {
		t.Fatal(err)
	}
	if got := d.pick("peer-0", now); got != "" {
		t.Errorf("pick with p1 leaving and p2 held: %q, want none (wait)", got)
	}
	if got := d.pick("peer-0", now.Add(leaveMemory+time.Second)); got != "p1:3024" {
		t.Errorf("pick after leaveMemory: %q, want p1:3024 again (a restarted proxy)", got)
	}
}

// TestDirectoryTakesARestartedProxyAtOnce: a proxy that said it was
// shutting down, left the proxy set and came back in it (a rolling
// restart) is chosen again at once, not after leaveMemory.
func TestDirectoryTakesARestartedProxyAtOnce(t *testing.T) {
	now := time.Unix(1000, 0)
	d := newDirectory("", []string{"p1:3024"}, newHomeRule(time.Second))
	d.update(proxyInfos("p1", "p2"))
	d.left(now, "p1", "p1:3024")
	if err := d.claim("peer-1", "p2"); err != nil {
		t.Fatal(err)
	}
	d.update(proxyInfos("p1", "p2")) // still in its peers' sets: still leaving
	if got := d.pick("peer-0", now); got != "" {
		t.Fatalf("pick while p1 drains: %q, want none", got)
	}
	d.update(proxyInfos("p2"))       // it left the cluster
	d.update(proxyInfos("p1", "p2")) // and joined again
	if got := d.pick("peer-0", now.Add(time.Second)); got != "p1:3024" {
		t.Errorf("pick once p1 is back: %q, want p1:3024 at once", got)
	}
}
