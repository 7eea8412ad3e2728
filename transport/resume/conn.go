package resume

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/transport/streams"
)

// Liveness of a hop: each end pings after pingEvery without writing, and
// drops a hop it has heard nothing on for silentAfter.
var (
	pingEvery   = 300 * time.Millisecond
	silentAfter = 1200 * time.Millisecond
)

// ErrDetached ends a session that found no new hop within its detach time.
var ErrDetached = errors.New("no path to the other end within the detach time")

// errSilent drops a hop nothing was heard on.
var errSilent = errors.New("hop silent")

// Conn is one end of a resumable session: a full-duplex byte stream that
// outlives the hops it runs over. It is a [streams.Stream] with CloseWrite.
// Read, Write, CloseWrite and Close may be called from any goroutine; at
// most one Read and one Write at a time.
type Conn struct {
	id     string
	window uint64

	mu       sync.Mutex
	readable *sync.Cond // data, EOF or the end
	writable *sync.Cond // window space or the end

	// Sending: the bytes [acked, sent) are kept, in sendq, until the other
	// end's reader takes them; the current hop has carried them up to
	// wrote.
	sendq       chunks
	sent, acked uint64
	wrote       uint64
	finWanted   bool // CloseWrite was called
	closing     bool // Close was called

	// Receiving: [delivered, recv) wait in recvq for the reader.
	recvq           chunks
	recv, delivered uint64
	ackSent         uint64
	ackDue          bool
	finRecv         bool
	remoteClosed    bool
	hop             *hop
	hops            int // hops attached so far
	detachedAt      time.Time
	err             error // set once the session has ended
	done            chan struct{}
	notes           []string // to send
	onNote          func(text string)
	onDetach        func(err error)
	onDone          func(err error)
}

// hop is one path the session runs over.
type hop struct {
	s         streams.Stream
	kick      chan struct{}
	dead      chan struct{}
	once      sync.Once
	heard     atomic.Int64 // unix nanos
	finSent   bool
	closeSent bool
	// preamble goes out before any frame: the agent's Welcome.
	preamble []byte
}

func newConn(id string, window uint64) *Conn {
	c := &Conn{id: id, window: window, done: make(chan struct{})}
	c.recvq.whole = true
	c.readable = sync.NewCond(&c.mu)
	c.writable = sync.NewCond(&c.mu)
	return c
}

// ID is the session's id.
func (c *Conn) ID() string { return c.id }

// Done is closed once the session has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the session ended, or nil while it runs or if it ended cleanly.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.err, net.ErrClosed) {
		return nil
	}
	return c.err
}

// Hops is how many hops the session has run over: 1 until its first
// resume.
func (c *Conn) Hops() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hops
}

// Buffered is how many bytes the session holds right now: sent and not yet
// taken by the other end, and received and not yet read here.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendq.size + c.recvq.size
}

// attach runs the session over s from now on; peerReceived is how many of
// this end's bytes the other end holds. greet, if set, makes the hop's
// first bytes from how many of the other end's bytes this end holds, taken
// as the hop is swapped in (bytes from an older hop are dropped from then
// on).
func (c *Conn) attach(s streams.Stream, peerReceived uint64, greet func(received uint64) []byte) (*hop, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if peerReceived < c.acked || peerReceived > c.sent {
		c.mu.Unlock()
		err := fmt.Errorf("resume: the other end holds %d bytes, but %d were acknowledged and %d sent", peerReceived, c.acked, c.sent)
		c.fail(err)
		return nil, err
	}
	if old := c.hop; old != nil {
		c.hop = nil
		old.drop()
	}
	h := &hop{s: s, kick: make(chan struct{}, 1), dead: make(chan struct{})}
	if greet != nil {
		h.preamble = greet(c.recv)
	}
	h.heard.Store(time.Now().UnixNano())
	c.hop = h
	c.hops++
	c.wrote = peerReceived
	c.ackDue = true
	c.detachedAt = time.Time{}
	c.mu.Unlock()
	go c.readLoop(h)
	go c.writeLoop(h)
	go c.watch(h)
	return h, nil
}

func (h *hop) drop() {
	h.once.Do(func() {
		close(h.dead)
		h.s.Close()
	})
}

func (h *hop) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// hopFailed drops h; unless the session is over, it waits detached.
func (c *Conn) hopFailed(h *hop, err error) {
	h.drop()
	c.mu.Lock()
	if c.hop != h {
		c.mu.Unlock()
		return
	}
	c.hop = nil
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if c.remoteClosed || (c.closing && c.acked == c.sent) {
		// Nothing is left that a resume would carry: the other end
		// closed, or took every byte this end wrote before it closed.
		c.mu.Unlock()
		c.fail(net.ErrClosed)
		return
	}
	c.detachedAt = time.Now()
	onDetach := c.onDetach
	c.mu.Unlock()
	if onDetach != nil {
		onDetach(err)
	}
}

// fail ends the session with err (net.ErrClosed for a clean end).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	h := c.hop
	c.hop = nil
	c.sendq.reset()
	c.readable.Broadcast()
	c.writable.Broadcast()
	onDone := c.onDone
	c.mu.Unlock()
	if h != nil {
		h.drop()
	}
	if onDone != nil {
		onDone(err)
	}
	close(c.done)
}

// kickLocked wakes the current hop's writer.
func (c *Conn) kickLocked() {
	if c.hop != nil {
		c.hop.poke()
	}
}

// Read reads the session's incoming bytes; it returns io.EOF after the
// other end's CloseWrite or Close, once every byte before it was read.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.recvq.size == 0 {
		switch {
		case c.finRecv || c.remoteClosed:
			return 0, io.EOF
		case c.err != nil:
			return 0, c.err
		case c.closing:
			return 0, net.ErrClosed
		}
		c.readable.Wait()
	}
	n := c.recvq.read(p)
	c.delivered += uint64(n)
	// Acks free the other end's window: one per eighth of it, and the
	// rest rides on data going back or replaces the next ping.
	if c.delivered-c.ackSent >= c.window/8 {
		c.ackDue = true
		c.kickLocked()
	}
	return n, nil
}

// Write sends p. It blocks while the window is full: while the other end's
// reader is behind, or while the session waits for a new hop.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for len(p) > 0 {
		for c.err == nil && !c.closing && !c.finWanted && !c.remoteClosed && c.sent-c.acked >= c.window {
			c.writable.Wait()
		}
		switch {
		case c.err != nil:
			return written, c.err
		case c.closing:
			return written, net.ErrClosed
		case c.finWanted:
			return written, errors.New("resume: write after CloseWrite")
		case c.remoteClosed:
			return written, io.ErrClosedPipe
		}
		n := min(uint64(len(p)), c.window-(c.sent-c.acked))
		c.sendq.write(p[:n])
		c.sent += n
		written += int(n)
		p = p[n:]
		c.kickLocked()
	}
	return written, nil
}

// Note sends the other end words for the session's user (the agent's SSH
// server writes them on the session's terminal). At most 4 wait at a time;
// more are dropped.
func (c *Conn) Note(text string) {
	if len(text) > maxNote {
		text = text[:maxNote]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && len(c.notes) < 4 {
		c.notes = append(c.notes, text)
		c.kickLocked()
	}
}

// CloseWrite tells the other end this end will write no more: its Read
// returns io.EOF after the bytes before.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.finWanted = true
	c.kickLocked()
	return nil
}

// Close ends the session at this end: reads and writes stop, and what is
// unread is dropped. The bytes written so far still go out, then a close
// frame, over new hops if need be: the session ends once the other end
// has taken them all (or closed too, or the detach time ran out). Close
// does not wait for that.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.err != nil || c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.readable.Broadcast()
	c.writable.Broadcast()
	// What this end will never read counts as taken: the other end's
	// writer stops waiting for it.
	c.recvq.reset()
	c.delivered = c.recv
	c.ackDue = true
	if c.hop == nil && (c.remoteClosed || c.acked == c.sent) {
		c.mu.Unlock()
		c.fail(net.ErrClosed)
		return nil
	}
	c.kickLocked()
	c.mu.Unlock()
	return nil
}

// closedUp says whether a closing session is over: its close frame went
// out on hop h, and the other end took every byte before it or closed
// too.
func (c *Conn) closedUp(h *hop) bool {
	return c.closing && h.closeSent && (c.acked == c.sent || c.remoteClosed)
}

// frames appends what the hop should write next: an ack if one is due,
// one data frame, the fin, the close.
func (c *Conn) frames(h *hop, b []byte) ([]byte, bool) {
	last := false
	if c.ackDue || (c.delivered > c.ackSent && c.wrote < c.sent) {
		b = append(b, fAck)
		b = binary.BigEndian.AppendUint64(b, c.delivered)
		c.ackSent, c.ackDue = c.delivered, false
	}
	for _, n := range c.notes {
		b = append(b, fNote)
		b = binary.BigEndian.AppendUint16(b, uint16(len(n)))
		b = append(b, n...)
	}
	c.notes = c.notes[:0]
	if c.wrote < c.sent {
		n := min(c.sent-c.wrote, maxData)
		b = append(b, fData)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = c.sendq.appendAt(b, int(c.wrote-c.acked), int(n))
		c.wrote += n
	}
	if c.wrote == c.sent {
		if c.finWanted && !h.finSent {
			b = append(b, fFin)
			b = binary.BigEndian.AppendUint64(b, c.sent)
			h.finSent = true
		}
		if c.closing && !h.closeSent {
			b = append(b, fClose)
			h.closeSent = true
			last = true
		}
	}
	return b, last
}

func (c *Conn) writeLoop(h *hop) {
	buf := make([]byte, 0, maxData+64)
	ping := time.NewTimer(pingEvery)
	defer ping.Stop()
	if len(h.preamble) > 0 {
		if _, err := h.s.Write(h.preamble); err != nil {
			c.hopFailed(h, err)
			return
		}
	}
	for {
		c.mu.Lock()
		if c.hop != h {
			c.mu.Unlock()
			return
		}
		var last bool
		buf, last = c.frames(h, buf[:0])
		c.mu.Unlock()
		if len(buf) == 0 {
			select {
			case <-h.kick:
			case <-h.dead:
				return
			case <-ping.C:
				c.mu.Lock()
				if c.delivered > c.ackSent {
					c.ackDue = true // an ack is heard as well as a ping
				} else {
					buf = append(buf, fPing)
				}
				c.mu.Unlock()
				ping.Reset(pingEvery)
			}
			if len(buf) == 0 {
				continue
			}
		}
		if _, err := h.s.Write(buf); err != nil {
			c.hopFailed(h, err)
			return
		}
		ping.Reset(pingEvery)
		if last {
			c.mu.Lock()
			over := c.hop == h && c.closedUp(h)
			c.mu.Unlock()
			if over {
				c.fail(net.ErrClosed)
				return
			}
		}
	}
}

func (c *Conn) readLoop(h *hop) {
	r := bufio.NewReaderSize(h.s, 64<<10)
	var head [8]byte
	for {
		t, err := r.ReadByte()
		if err != nil {
			c.hopFailed(h, err)
			return
		}
		h.heard.Store(time.Now().UnixNano())
		switch t {
		case fData:
			if _, err := io.ReadFull(r, head[:4]); err != nil {
				c.hopFailed(h, err)
				return
			}
			n := binary.BigEndian.Uint32(head[:4])
			if n == 0 || n > maxData {
				c.fail(fmt.Errorf("resume: data frame of %d bytes (at most %d)", n, maxData))
				return
			}
			data := getBlock()[:n]
			if _, err := io.ReadFull(r, data); err != nil {
				c.hopFailed(h, err)
				return
			}
			if err := c.received(h, data); err != nil {
				c.fail(err)
				return
			}
		case fAck:
			if _, err := io.ReadFull(r, head[:8]); err != nil {
				c.hopFailed(h, err)
				return
			}
			if err := c.acknowledged(h, binary.BigEndian.Uint64(head[:8])); err != nil {
				c.fail(err)
				return
			}
		case fFin:
			if _, err := io.ReadFull(r, head[:8]); err != nil {
				c.hopFailed(h, err)
				return
			}
			if err := c.finished(h, binary.BigEndian.Uint64(head[:8])); err != nil {
				c.fail(err)
				return
			}
		case fPing:
		case fNote:
			if _, err := io.ReadFull(r, head[:2]); err != nil {
				c.hopFailed(h, err)
				return
			}
			n := binary.BigEndian.Uint16(head[:2])
			if n > maxNote {
				c.fail(fmt.Errorf("resume: note of %d bytes (at most %d)", n, maxNote))
				return
			}
			text := make([]byte, n)
			if _, err := io.ReadFull(r, text); err != nil {
				c.hopFailed(h, err)
				return
			}
			c.mu.Lock()
			onNote := c.onNote
			c.mu.Unlock()
			if onNote != nil {
				go onNote(string(text))
			}
		case fClose:
			c.mu.Lock()
			if c.hop == h {
				c.remoteClosed = true
				c.readable.Broadcast()
				c.writable.Broadcast()
			}
			closing := c.closing
			c.mu.Unlock()
			if closing {
				c.fail(net.ErrClosed)
			}
			return
		default:
			c.fail(fmt.Errorf("resume: unknown frame type %d", t))
			return
		}
	}
}

// watch drops h once nothing was heard on it for silentAfter.
func (c *Conn) watch(h *hop) {
	t := time.NewTicker(silentAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-h.dead:
			return
		case <-t.C:
			if time.Since(time.Unix(0, h.heard.Load())) > silentAfter {
				c.hopFailed(h, errSilent)
				return
			}
		}
	}
}

func (c *Conn) received(h *hop, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hop != h {
		return nil
	}
	if c.finRecv || c.remoteClosed {
		return errors.New("resume: data after the end of the stream")
	}
	if c.recv-c.delivered+uint64(len(data)) > c.window {
		return fmt.Errorf("resume: the other end overran the window of %d bytes", c.window)
	}
	c.recvq.push(data)
	c.recv += uint64(len(data))
	c.readable.Broadcast()
	return nil
}

func (c *Conn) acknowledged(h *hop, delivered uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hop != h {
		return nil
	}
	if delivered > c.wrote {
		return fmt.Errorf("resume: the other end acknowledged %d bytes; %d were sent", delivered, c.wrote)
	}
	if delivered > c.acked {
		c.sendq.discard(int(delivered - c.acked))
		c.acked = delivered
		c.writable.Broadcast()
	}
	if c.closedUp(h) {
		return net.ErrClosed // the caller ends the session, cleanly
	}
	return nil
}

func (c *Conn) finished(h *hop, total uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hop != h || c.finRecv {
		return nil
	}
	if total != c.recv {
		return fmt.Errorf("resume: end of stream at %d bytes, but %d arrived", total, c.recv)
	}
	c.finRecv = true
	c.readable.Broadcast()
	return nil
}

// chunks is a byte queue in blocks, so a quiet session holds next to
// nothing and a busy one no more than it has in flight. Blocks of
// chunkSize come from a pool and go back to it once read: a bulk
// session makes no garbage per frame.
type chunks struct {
	bufs [][]byte
	head int // bytes of bufs[0] already gone
	size int
	// whole: every block is dropped once read (a receive queue, whose
	// blocks are frames), even the last.
	whole bool
}

var blocks = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

func getBlock() []byte { return *blocks.Get().(*[]byte) }

func putBlock(b []byte) {
	if cap(b) == chunkSize {
		b = b[:chunkSize]
		blocks.Put(&b)
	}
}

const chunkSize = 32 << 10

func (q *chunks) write(p []byte) {
	for len(p) > 0 {
		n := len(q.bufs)
		if n == 0 || len(q.bufs[n-1]) == cap(q.bufs[n-1]) {
			// Blocks as large as the writes, up to chunkSize: keystrokes
			// share a small one.
			if len(p) >= chunkSize {
				q.bufs = append(q.bufs, getBlock()[:0])
			} else {
				q.bufs = append(q.bufs, make([]byte, 0, max(len(p), 512)))
			}
			n++
		}
		last := &q.bufs[n-1]
		m := min(len(p), cap(*last)-len(*last))
		*last = append(*last, p[:m]...)
		p = p[m:]
		q.size += m
	}
}

// push queues data, which the queue now owns.
func (q *chunks) push(data []byte) {
	q.bufs = append(q.bufs, data)
	q.size += len(data)
}

func (q *chunks) read(p []byte) int {
	n := 0
	for n < len(p) && q.size > 0 {
		m := copy(p[n:], q.bufs[0][q.head:])
		n += m
		q.consume(m)
	}
	return n
}

func (q *chunks) discard(n int) {
	for n > 0 && q.size > 0 {
		m := min(n, len(q.bufs[0])-q.head)
		q.consume(m)
		n -= m
	}
}

func (q *chunks) consume(m int) {
	q.head += m
	q.size -= m
	// A block is dropped once read, unless more may still be appended to
	// it (the last one, not full).
	if q.head == len(q.bufs[0]) && (q.whole || len(q.bufs) > 1 || len(q.bufs[0]) == cap(q.bufs[0])) {
		putBlock(q.bufs[0])
		q.bufs[0] = nil
		q.bufs = q.bufs[1:]
		q.head = 0
	}
}

// appendAt appends n bytes starting off bytes into the queue to b.
func (q *chunks) appendAt(b []byte, off, n int) []byte {
	off += q.head
	for _, c := range q.bufs {
		if off >= len(c) {
			off -= len(c)
			continue
		}
		m := min(n, len(c)-off)
		b = append(b, c[off:off+m]...)
		n -= m
		off = 0
		if n == 0 {
			break
		}
	}
	return b
}

func (q *chunks) reset() { *q = chunks{whole: q.whole} }
