// Package ratelimit holds a keyed token bucket: how often one party (an
// address, an agent) may do something an attacker would repeat at will,
// such as trying join tokens.
package ratelimit

import (
	"sync"
	"time"
)

// Keyed is a token bucket per key: each key may act Burst times at once,
// and gains one more every Every. Keys idle long enough to be full again
// are forgotten, and at most MaxKeys are held: when that many keys are
// busy at once, new keys are refused until some refill, so the limiter's
// own memory is bounded too. Safe for concurrent use.
type Keyed struct {
	Burst   int
	Every   time.Duration
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Allow takes one token from key's bucket and reports whether there was one.
func (k *Keyed) Allow(key string) bool { return k.take(key, true) }

// Has reports whether key's bucket holds a token, without taking it: for
// limits that charge only failures (a right join token costs nothing, a
// wrong one a token), ask Has before and Allow after a failure.
func (k *Keyed) Has(key string) bool { return k.take(key, false) }

func (k *Keyed) take(key string, take bool) bool {
	now := time.Now()
	if k.Now != nil {
		now = k.Now()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buckets == nil {
		k.buckets = map[string]*bucket{}
	}
	b, ok := k.buckets[key]
	if !ok {
		if len(k.buckets) >= k.MaxKeys {
			k.pruneLocked(now)
			if len(k.buckets) >= k.MaxKeys {
				return false
			}
		}
		b = &bucket{tokens: float64(k.Burst), last: now}
		k.buckets[key] = b
	}
	b.tokens = min(float64(k.Burst), b.tokens+float64(now.Sub(b.last))/float64(k.Every))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	if take {
		b.tokens--
	}
	return true
}

// pruneLocked forgets buckets that have refilled: they hold nothing a new
// bucket would not.
func (k *Keyed) pruneLocked(now time.Time) {
	full := time.Duration(k.Burst) * k.Every
	for key, b := range k.buckets {
		if now.Sub(b.last) >= full {
			delete(k.buckets, key)
		}
	}
}
