package ratelimit

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestKeyed(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	k := &Keyed{Burst: 3, Every: time.Second, MaxKeys: 2, Now: c.now}
	for i := range 3 {
		if !k.Allow("a") {
			t.Fatalf("attempt %d of a burst of 3 refused", i+1)
		}
	}
	if k.Allow("a") {
		t.Fatal("a fourth attempt in a burst of 3 allowed")
	}
	if !k.Allow("b") {
		t.Fatal("another key is held back by a's bucket")
	}
	if k.Allow("c") {
		t.Fatal("a third key allowed with MaxKeys 2 while both buckets are busy")
	}
	c.t = c.t.Add(time.Second)
	if !k.Allow("a") || k.Allow("a") {
		t.Fatal("after one interval a should have exactly one more token")
	}
	c.t = c.t.Add(10 * time.Second)
	if !k.Allow("c") {
		t.Fatal("a new key refused after the old buckets refilled")
	}
}
