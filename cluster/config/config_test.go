package config

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestClockIsMonotonicAndObserves(t *testing.T) {
	frozen := time.Unix(100, 0)
	c := NewClock("p1", func() time.Time { return frozen })
	a, b := c.Now(), c.Now()
	if !a.Less(b) {
		t.Fatalf("second timestamp %v not after first %v with a frozen wall clock", b, a)
	}
	future := Version{Wall: time.Unix(500, 0).UnixNano(), Logical: 7, Node: "p2"}
	c.Observe(future)
	if n := c.Now(); !future.Less(n) {
		t.Fatalf("after observing %v, Now gave %v: not newer", future, n)
	}
}

func TestLastWriterWinsAndTombstonesHold(t *testing.T) {
	tb := NewTable()
	v1 := Version{Wall: 1, Node: "p1"}
	v2 := Version{Wall: 2, Node: "p2"}
	v3 := Version{Wall: 3, Node: "p1"}
	if !tb.Merge(Entry{Key: "web", Value: []byte("one"), Version: v2}) {
		t.Fatal("first write not applied")
	}
	if tb.Merge(Entry{Key: "web", Value: []byte("older"), Version: v1}) {
		t.Fatal("an older write replaced a newer one")
	}
	if !tb.Merge(Entry{Key: "web", Deleted: true, Version: v3}) {
		t.Fatal("newer delete not applied")
	}
	if tb.Merge(Entry{Key: "web", Value: []byte("late"), Version: v2}) {
		t.Fatal("a late write resurrected a deleted entry")
	}
	if _, ok := tb.Get("web"); ok {
		t.Fatal("deleted entry still live")
	}
}

// TestConcurrentWritersConverge: replicas that receive the same writes in
// different orders, with duplicates, end up identical.
func TestConcurrentWritersConverge(t *testing.T) {
	var writes []Entry
	clocks := []*Clock{NewClock("p1", nil), NewClock("p2", nil), NewClock("p3", nil)}
	for i := 0; i < 300; i++ {
		c := clocks[i%3]
		e := Entry{Key: fmt.Sprintf("r%d", i%7), Value: []byte(fmt.Sprint(i)), Version: c.Now()}
		if i%11 == 0 {
			e.Value, e.Deleted = nil, true
		}
		writes = append(writes, e)
	}
	var replicas []*Table
	for r := 0; r < 4; r++ {
		tb := NewTable()
		order := rand.Perm(len(writes))
		for _, i := range order {
			tb.Merge(writes[i])
			if i%5 == 0 {
				tb.Merge(writes[i]) // duplicate delivery
			}
		}
		replicas = append(replicas, tb)
	}
	want := fmt.Sprint(replicas[0].All())
	for i, tb := range replicas[1:] {
		if got := fmt.Sprint(tb.All()); got != want {
			t.Fatalf("replica %d differs:\n got %s\nwant %s", i+1, got, want)
		}
	}
}
