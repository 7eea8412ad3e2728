// Package logsample logs events an attacker can repeat at will (a refused
// connection, channel, name or token) without letting a flood of them
// flood the log.
package logsample

import (
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Every is the usual interval: at most one line per ten seconds while a
// flood lasts.
const Every = 10 * time.Second

// Sampler logs one kind of event that an attacker can repeat at will
// (a refused connection, channel or name) without letting a flood of them
// flood the log: the first event of a burst is logged at once, then at
// most one line per interval, with the latest event's fields and how many
// there were since the previous line. A quiet interval ends the burst.
type Sampler struct {
	logger *slog.Logger
	msg    string
	every  time.Duration

	mu      sync.Mutex  // guards the fields below
	timer   *time.Timer // set while a burst lasts
	count   int         // events not logged yet
	last    []any       // fields of the latest of them
	stopped bool
}

// New returns a Sampler that logs msg at warning level, at most once per
// every while a burst lasts.
func New(log *slog.Logger, msg string, every time.Duration) *Sampler {
	return &Sampler{logger: log, msg: msg, every: every}
}

// Event records one event with its slog fields.
func (l *Sampler) Event(attrs ...any) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	if l.timer != nil {
		l.count++
		l.last = attrs
		l.mu.Unlock()
		return
	}
	l.timer = time.AfterFunc(l.every, l.tick)
	l.mu.Unlock()
	l.logger.Warn(l.msg, attrs...)
}

// tick logs the events of the last interval, if any, and ends the burst
// if there were none.
func (l *Sampler) tick() {
	l.mu.Lock()
	count, last := l.count, l.last
	l.count, l.last = 0, nil
	if count == 0 || l.stopped {
		l.timer = nil
	} else {
		l.timer.Reset(l.every)
	}
	l.mu.Unlock()
	l.summary(count, last)
}

// Stop logs what is pending and ends sampling.
func (l *Sampler) Stop() {
	l.mu.Lock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	count, last := l.count, l.last
	l.count, l.last = 0, nil
	l.mu.Unlock()
	l.summary(count, last)
}

func (l *Sampler) summary(count int, last []any) {
	if count == 0 {
		return
	}
	// The fields are the latest event's; "suppressed" counts the events
	// since the previous line, this one included.
	l.logger.Warn(l.msg, append(slices.Clip(last), "suppressed", count)...)
}
