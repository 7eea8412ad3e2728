package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

const (
	// lingerTimeout bounds how long a closed client stream whose directions
	// both ended in-band waits for the server's final status (see Close).
	lingerTimeout = 10 * time.Second
	// idleTimeout lets a Dialer's connection to a peer with no streams go
	// idle (no socket, no reconnect attempts); the next Open reconnects.
	idleTimeout = 2 * time.Minute
	// maxFarConns bounds a Dialer's connections to one proxy of another
	// region: past it, new streams share the connection with the fewest.
	// maxFarIdle is how many connections without a stream it keeps ready
	// for the next sessions (one is dialled ahead whenever none is left).
	maxFarConns = 64
	maxFarIdle  = 2
)

// DialOptions returns grpc dial options for protoactor remote's client side
// (TLS creds, keepalive, static window sizes, a reconnect backoff capped at
// 5 s). A Dialer uses the same, but for the windows of its connections to
// another region (see [WithFar]). The TLS creds read the server's first
// bytes before handing the connection to gRPC, so a server's refusal of our
// certificate is reported with its alert (see clientCreds).
func DialOptions(id Identity) []grpc.DialOption {
	return append(pathDialOptions(id),
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(connWindow))
}

// pathDialOptions are DialOptions without the windows.
func pathDialOptions(id Identity) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(clientCreds{credentials.NewTLS(id.ClientTLS())}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                10 * time.Second,
			Timeout:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxControlMsgSize)),
		// A restarted peer is back within seconds; gRPC's default backoff
		// grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   5 * time.Second,
			},
			MinConnectTimeout: handshakeTimeout,
		}),
	}
}

// Dialer opens data streams to peers (separate from protoactor's
// connections, so bulk bytes don't delay control messages). Streams to a
// proxy of its own region share one pooled grpc.ClientConn per address;
// streams to a proxy of another region ([WithFar]) get a connection each,
// up to maxFarConns per address, so that a keystroke never waits behind
// another session's bytes in a shared TCP connection's congestion window
// across an ocean. It is safe for concurrent use.
type Dialer struct {
	opts    []grpc.DialOption // to a proxy of this region
	farOpts []grpc.DialOption // to a proxy of another region
	far     func(addr string) (dial string, ok bool)
	log     *slog.Logger

	mu      sync.Mutex           // guards the fields below
	conns   map[string]*peerConn // to proxies of this region, one per address
	farPool map[string]*farPool
	// forgotten are connections Forget took out while they carried
	// streams: each closes with its last stream, or with Close.
	forgotten map[*peerConn]string
	closed    bool
	lingers   sync.WaitGroup // closing streams waiting for their status; Add only under mu while !closed
}

// farPool is a Dialer's connections to one proxy of another region.
type farPool struct {
	all  map[*peerConn]struct{}
	idle []*peerConn // connections without a stream, the newest last
	gone bool        // Forget took it out: its connections close as their streams end
}

// peerConn is one pooled connection and its number of open streams (the
// one connection to a proxy of this region is counted the same way).
type peerConn struct {
	cc      *grpc.ClientConn
	streams int
}

// FarLinkMsg is logged when a Dialer makes its first connection to a proxy
// of another region.
const FarLinkMsg = "peer: data links to another region, a connection per session, windows sized by BDP estimation"

// DialerOption configures a Dialer.
type DialerOption func(*Dialer)

// WithFar tells the Dialer which peer addresses are far, proxies of another
// region, and where their far server listens (dial; "" for addr itself, a
// proxy without one). Each stream to a far proxy gets a connection of its
// own (see Dialer) to that server, and both ends size their windows by
// gRPC's BDP estimation (64 KiB growing to 16 MiB; the far server's side
// by [FarServerOptions]), so neither a download nor an upload across an
// ocean is held to a fixed window per round trip. Connections inside the
// region keep the static windows, which queue fewer bulk bytes in front
// of a keystroke (on loopback the estimation grew them to about 8 MiB
// under a bulk transfer and made a keystroke beside it slower). far is
// asked on every Open; it must be quick and safe for concurrent use.
func WithFar(far func(addr string) (dial string, ok bool)) DialerOption {
	return func(d *Dialer) { d.far = far }
}

// NewDialer returns a Dialer that presents id. logger may be nil.
func NewDialer(id Identity, logger *slog.Logger, opts ...DialerOption) *Dialer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	common := []grpc.DialOption{grpc.WithIdleTimeout(idleTimeout), grpc.WithUserAgent("warren-peer")}
	d := &Dialer{
		opts:      append(DialOptions(id), common...),
		farOpts:   append(pathDialOptions(id), common...),
		log:       logger,
		conns:     make(map[string]*peerConn),
		farPool:   make(map[string]*farPool),
		forgotten: make(map[*peerConn]string),
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

var streamDesc = grpc.StreamDesc{StreamName: "Stream", ClientStreams: true, ServerStreams: true}

// Open opens a data stream to the proxy at addr for the session named by
// token. It returns only after the server's Handler accepted the token (the
// accept frame); a refusal is a [*RefusedError] carrying the server's reason.
// ctx bounds the opening only: once open, the stream lives until Close.
func (d *Dialer) Open(ctx context.Context, addr, token string) (Stream, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, fmt.Errorf("open peer stream to %s: the token must be 1 to %d bytes, got %d", addr, maxTokenLen, len(token))
	}
	cc, release, err := d.acquire(addr)
	if err != nil {
		return nil, fmt.Errorf("open peer stream to %s: %w", addr, err)
	}
	sctx, cancelRPC := context.WithCancel(context.WithoutCancel(ctx))
	cancel := sync.OnceFunc(func() { cancelRPC(); release() })
	stop := context.AfterFunc(ctx, cancel)
	s, err := d.open(sctx, cc, addr, token)
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended just as the stream opened; it is cancelled
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil && !errors.Is(err, ErrRefused) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("open peer stream to %s: %w", addr, err)
	}
	s.cancel = cancel
	d.log.Debug("peer: opened data stream", "addr", addr)
	return s, nil
}

// acquire returns the connection a new stream to addr goes on, and the
// function to call once when the stream is over.
func (d *Dialer) acquire(addr string) (*grpc.ClientConn, func(), error) {
	var dial string
	if d.far != nil {
		var far bool
		if dial, far = d.far(addr); !far {
			dial = ""
		} else if dial == "" {
			dial = addr
		}
	}
	if dial == "" {
		return d.conn(addr)
	}
	addr = dial // the pool is the far server's
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, ErrClosed
	}
	p := d.farPool[addr]
	if p == nil {
		p = &farPool{all: make(map[*peerConn]struct{})}
		d.farPool[addr] = p
		d.log.Info(FarLinkMsg, "addr", addr)
	}
	var fc *peerConn
	switch {
	case len(p.idle) > 0:
		fc = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
	case len(p.all) < maxFarConns:
		var err error
		if fc, err = d.newFarConn(p, addr); err != nil {
			return nil, nil, err
		}
	default:
		for c := range p.all {
			if fc == nil || c.streams < fc.streams {
				fc = c
			}
		}
	}
	fc.streams++
	// Dial the next session's connection now, off its critical path.
	if len(p.idle) == 0 && len(p.all) < maxFarConns {
		if spare, err := d.newFarConn(p, addr); err == nil {
			spare.cc.Connect()
			p.idle = append(p.idle, spare)
		}
	}
	return fc.cc, sync.OnceFunc(func() { d.releaseFar(p, fc) }), nil
}

// newFarConn adds a new connection to p; d.mu is held.
func (d *Dialer) newFarConn(p *farPool, addr string) (*peerConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, d.farOpts...)
	if err != nil {
		return nil, err
	}
	fc := &peerConn{cc: cc}
	p.all[fc] = struct{}{}
	return fc, nil
}

// releaseFar ends a stream's use of fc: a connection left without a
// stream waits for the next one, or closes when enough already wait.
func (d *Dialer) releaseFar(p *farPool, fc *peerConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return // Close closed it
	}
	if fc.streams--; fc.streams > 0 {
		return
	}
	if !p.gone && len(p.idle) < maxFarIdle {
		p.idle = append(p.idle, fc)
		return
	}
	delete(p.all, fc)
	delete(d.forgotten, fc)
	d.closeConn(fc)
}

// closeConn closes fc in the background (its streams' final statuses
// are awaited by Close); d.mu is held and d is open.
func (d *Dialer) closeConn(fc *peerConn) {
	d.lingers.Add(1)
	go func() {
		defer d.lingers.Done()
		fc.cc.Close()
	}()
}

// conn returns the one connection to a proxy of this region at addr, and
// the function to call once when the stream is over.
func (d *Dialer) conn(addr string) (*grpc.ClientConn, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, ErrClosed
	}
	fc := d.conns[addr]
	if fc == nil {
		// passthrough: addr is dialled as it is, like net.Dial, with no
		// resolver of its own.
		cc, err := grpc.NewClient("passthrough:///"+addr, d.opts...)
		if err != nil {
			return nil, nil, err
		}
		fc = &peerConn{cc: cc}
		d.conns[addr] = fc
	}
	fc.streams++
	return fc.cc, sync.OnceFunc(func() { d.releaseNear(addr, fc) }), nil
}

// releaseNear ends a stream's use of the connection to a proxy of this
// region; one that Forget took out closes with its last stream.
func (d *Dialer) releaseNear(addr string, fc *peerConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return // Close closed it
	}
	if fc.streams--; fc.streams == 0 && d.conns[addr] != fc {
		delete(d.forgotten, fc)
		d.closeConn(fc)
	}
}

// Forget drops what d keeps for a proxy that left the cluster, under
// every address it was dialled at (its peer address, and its far port's):
// connections without a stream close now, the others when their last
// stream ends, and the next Open to one of these addresses dials afresh.
// Without it a Dialer would keep a gRPC client (and its goroutines) for
// every address a proxy ever had.
func (d *Dialer) Forget(addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for _, addr := range addrs {
		if fc := d.conns[addr]; fc != nil {
			delete(d.conns, addr)
			if fc.streams == 0 {
				d.closeConn(fc)
			} else {
				d.forgotten[fc] = addr
			}
		}
		if p := d.farPool[addr]; p != nil {
			delete(d.farPool, addr)
			p.gone = true
			for _, fc := range p.idle {
				delete(p.all, fc)
				d.closeConn(fc)
			}
			p.idle = nil
			for fc := range p.all {
				d.forgotten[fc] = addr
			}
		}
	}
}

func (d *Dialer) open(ctx context.Context, cc *grpc.ClientConn, addr, token string) (*clientStream, error) {
	cs, err := cc.NewStream(ctx, &streamDesc, StreamMethod,
		grpc.CallContentSubtype(codecName), grpc.MaxCallRecvMsgSize(maxFrame))
	if err != nil {
		return nil, err
	}
	s := &clientStream{d: d, cs: cs, addr: addr}
	hello := make([]byte, 1+len(token))
	hello[0] = Version
	copy(hello[1:], token)
	// io.EOF means the server already ended the RPC; RecvMsg has the reason.
	if err := cs.SendMsg(&outFrame{typ: frameHello, payload: hello}); err != nil && err != io.EOF {
		return nil, err
	}
	err = cs.RecvMsg(&s.in)
	switch {
	case err == io.EOF:
		return nil, &RefusedError{Addr: addr, Code: codes.OK, Reason: "the handler closed the stream without accepting it"}
	case err != nil:
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
			return nil, err // not an answer from the server: a failed link or our ctx
		}
		return nil, &RefusedError{Addr: addr, Code: st.Code(), Reason: st.Message()}
	}
	typ := s.in.next()
	b := s.in.readAll()
	if typ != frameAccept || len(b) < 1 {
		return nil, &ProtocolError{Msg: fmt.Sprintf("expected accept, got frame %q", typ)}
	}
	return s, nil
}

// Close closes every connection, which ends every stream opened through d,
// and waits for closing streams. Open fails with ErrClosed afterwards.
func (d *Dialer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	conns := d.conns
	d.conns = nil
	pools := d.farPool
	d.farPool = nil
	forgotten := d.forgotten
	d.forgotten = nil
	d.mu.Unlock()
	var errs []error
	for addr, fc := range conns {
		if err := fc.cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", addr, err))
		}
	}
	for addr, p := range pools {
		for fc := range p.all {
			if err := fc.cc.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close connection to %s: %w", addr, err))
			}
		}
	}
	for fc, addr := range forgotten {
		if err := fc.cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", addr, err))
		}
	}
	d.lingers.Wait()
	return errors.Join(errs...)
}

// linger starts the background wait of a closed stream for its final
// status. It reports false when d is closed (the stream is then cancelled).
func (d *Dialer) linger(s *clientStream) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.lingers.Add(1)
	go func() {
		defer d.lingers.Done()
		t := time.AfterFunc(lingerTimeout, s.cancel)
		defer t.Stop()
		s.readMu.Lock()
		for s.cs.RecvMsg(&s.in) == nil {
			s.in.discard()
		}
		s.readMu.Unlock()
		s.cancel()
	}()
	return true
}

// clientStream is the Stream Open returns.
type clientStream struct {
	d      *Dialer
	cs     grpc.ClientStream
	addr   string
	cancel context.CancelFunc // ends the RPC

	closed  atomic.Bool
	sentEOF atomic.Bool // CloseSend done
	gotEOF  atomic.Bool // the server's EOF frame arrived
	ended   atomic.Bool // the RPC is over: RecvMsg returned its status

	readMu  sync.Mutex // serializes RecvMsg; guards the fields below
	in      inFrame
	readErr error // sticky: io.EOF after the server's EOF, or the failure

	writeMu     sync.Mutex // serializes SendMsg and CloseSend; guards the fields below
	out         outFrame
	writeClosed bool
}

func (s *clientStream) Read(p []byte) (int, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for {
		if s.closed.Load() {
			return 0, ErrClosed
		}
		if s.in.r.Remaining() > 0 {
			n, _ := s.in.r.Read(p)
			return n, nil
		}
		if s.readErr != nil {
			return 0, s.readErr
		}
		if len(p) == 0 {
			return 0, nil
		}
		err := s.cs.RecvMsg(&s.in)
		switch {
		case err == io.EOF:
			// The handler returned without sending EOF (it closed): the
			// data before it is all there is.
			s.ended.Store(true)
			s.readErr = io.EOF
		case err != nil:
			s.ended.Store(true)
			if s.closed.Load() {
				return 0, ErrClosed
			}
			s.readErr = fmt.Errorf("peer stream from %s: %w", s.addr, err)
		default:
			switch typ, n := s.in.next(), s.in.r.Remaining(); {
			case typ == frameData && n > 0:
			case typ == frameEOF && n == 0:
				s.gotEOF.Store(true)
				s.readErr = io.EOF
			default:
				s.in.discard()
				s.readErr = &ProtocolError{Msg: fmt.Sprintf("unexpected frame %q with %d bytes from %s", typ, n, s.addr)}
			}
		}
	}
}

func (s *clientStream) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeClosed {
		return 0, errWriteClosed
	}
	n := 0
	for len(p) > 0 {
		if s.closed.Load() {
			return n, ErrClosed
		}
		c := min(len(p), MaxFrameData)
		s.out = outFrame{typ: frameData, payload: p[:c]}
		err := s.cs.SendMsg(&s.out)
		s.out.payload = nil
		if err != nil {
			switch {
			case s.closed.Load():
				return n, ErrClosed
			case err == io.EOF:
				return n, errRemoteEnded
			}
			return n, fmt.Errorf("peer stream to %s: %w", s.addr, err)
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CloseWrite half-closes: the server's Read returns io.EOF after the data
// before it, and the server may go on writing.
func (s *clientStream) CloseWrite() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeClosed {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	s.writeClosed = true
	err := s.cs.CloseSend()
	s.sentEOF.Store(true)
	return err
}

// Close ends the stream. When both directions already ended in-band (our
// CloseWrite and the server's EOF) the server may still be consuming what we
// sent, so the RPC is left to finish by itself, for at most lingerTimeout;
// otherwise it is cancelled at once and data still in flight is dropped,
// like a socket closed with unread data.
func (s *clientStream) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if !s.ended.Load() && s.sentEOF.Load() && s.gotEOF.Load() && s.d.linger(s) {
		return nil
	}
	s.cancel()
	return nil
}
