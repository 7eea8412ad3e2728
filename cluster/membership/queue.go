package membership

import "sync"

// eventQueue is an unbounded FIFO between memberlist's callbacks, which
// run under memberlist's node lock and must never block, and the Events
// channel, which a slow reader may leave full.
type eventQueue struct {
	wake chan struct{} // capacity 1: "items is not empty"

	mu    sync.Mutex // guards the field below
	items []Event
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1)}
}

// push appends e; it never blocks.
func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop returns the oldest event, if any.
func (q *eventQueue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return Event{}, false
	}
	e := q.items[0]
	q.items[0] = Event{}
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let the backing array go
	}
	return e, true
}

// run feeds out in order until done is closed, then closes out. Events
// still queued then are dropped: nobody is left to read them.
func (q *eventQueue) run(out chan<- Event, done <-chan struct{}) {
	defer close(out)
	for {
		e, ok := q.pop()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-done:
				return
			}
		}
		select {
		case out <- e:
		case <-done:
			return
		}
	}
}
