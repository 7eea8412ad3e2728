package proxy

import (
	"strconv"
	"testing"
	"time"

	"github.com/warren-proxy/warren/transport/revtunnel"
)

// TestBusyQueuePacesReturns: a fleet turned away at once from one address
// is handed return times one slot's turnover apart (mean handshake / the
// cap), in order, never past MaxBusyRetryAfter nor under busyMinWait;
// another address, and the overall cap, have queues of their own; once
// the times have passed, the queue starts from now again.
func TestBusyQueuePacesReturns(t *testing.T) {
	var q busyQueue
	for range 20 {
		q.observe(640 * time.Millisecond)
	}
	now := time.Now()
	const slots = 64 // 640 ms / 64: 10 ms apart
	var prev time.Duration
	for i := 1; i <= 1000; i++ {
		got := q.wait("10.0.0.1", slots, now)
		want := max(time.Duration(i)*10*time.Millisecond, busyMinWait)
		want = min(want, revtunnel.MaxBusyRetryAfter)
		if got < want*9/10 || got > want*11/10 {
			t.Fatalf("agent %d turned away: wait %s, want %s ±10%%", i, got, want)
		}
		if i > 100 && i < 400 && got < prev-want/5 {
			t.Fatalf("agent %d asked back at %s, well before agent %d (%s)", i, got, i-1, prev)
		}
		prev = got
	}
	if got := q.wait("10.0.0.2", slots, now); got > busyMinWait*11/10 {
		t.Errorf("another address waits %s behind the first one's queue", got)
	}
	if got := q.wait("", 512, now); got > busyMinWait*11/10 {
		t.Errorf("the overall cap waits %s behind an address's queue", got)
	}
	later := now.Add(revtunnel.MaxBusyRetryAfter + time.Second)
	if got := q.wait("10.0.0.1", slots, later); got > busyMinWait*11/10 {
		t.Errorf("after the queue ran out, a new one waits %s", got)
	}
}

// The queue keeps at most busyKeys addresses' times, however many
// addresses are turned away; past times make room for new ones.
func TestBusyQueueIsBounded(t *testing.T) {
	var q busyQueue
	now := time.Now()
	for i := range 10 * busyKeys {
		q.wait("10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256), 64, now)
	}
	if n := len(q.next); n > busyKeys {
		t.Fatalf("%d return times kept, want at most %d", n, busyKeys)
	}
	for i := range busyKeys {
		q.wait("10.1.0."+strconv.Itoa(i), 64, now.Add(time.Minute))
	}
	if _, ok := q.next["10.1.0.0"]; !ok {
		t.Error("past return times did not make room for a new address")
	}
	if n := len(q.next); n > busyKeys {
		t.Fatalf("%d return times kept, want at most %d", n, busyKeys)
	}
}
