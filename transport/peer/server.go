package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Handler receives a data stream opened by a peer: token names the session
// the peer prepared. The handler accepts the stream by its first Read, Write
// or CloseWrite (or [Accept]); returning an error before that refuses it, and
// the error's text reaches the caller of [Dialer.Open] (a gRPC status error
// keeps its code). Returning ends the stream. ctx ends when the peer goes
// away; the handler must return then, which it does naturally when it is
// blocked on the stream.
type Handler func(ctx context.Context, peerID, token string, s Stream) error

// Stream is one bidirectional byte stream; it satisfies what
// transport/streams.Pipe needs (Read, Write, Close) plus CloseWrite
// (half-close: CloseSend on the client; on the server, an end-of-data frame).
//
// One Read and one Write may run at once. Close may be called at any time
// from any goroutine and unblocks both.
type Stream interface {
	io.ReadWriter
	io.Closer
	CloseWrite() error
}

// ServerConfig configures the data-stream service and the guard that
// [ServerOptions] put on a proxy's peer gRPC server.
type ServerConfig struct {
	Identity Identity
	Handler  Handler
	// AllowPeer, if set, must approve a peer id (e.g. only current cluster
	// members). It is asked on every call, protoactor's included.
	AllowPeer func(id string) bool
	Logger    *slog.Logger
}

// Validate reports every problem of the config at once.
func (c ServerConfig) Validate() error {
	errs := c.Identity.validate()
	if c.Handler == nil {
		errs = append(errs, errors.New("Handler: a data-stream handler is required"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("peer server config: %w", errors.Join(errs...))
	}
	return nil
}

const (
	// streamWindow and connWindow are the static HTTP/2 flow-control windows
	// of every connection but those to and from another region (BDP
	// estimation off): the most unread bytes a stream, or a connection, can
	// have in flight. Small windows keep few bulk bytes queued in a shared
	// link in front of a keystroke.
	streamWindow = 1 << 20
	connWindow   = 4 << 20
	// A Dialer's connections to another region, and the far server
	// (FarServerOptions), set no window: gRPC's BDP estimation starts them
	// at 64 KiB and grows them to 16 MiB at most (grpc-go's bdpLimit). Any
	// window option would turn the estimation off (see the package doc and
	// TestWindowFollowsThePath).

	// MaxControlMsgSize is the largest gRPC message the peer server takes.
	// It is sized for protoactor's message batches (up to a thousand
	// messages each; gRPC's default 4 MiB dropped whole batches in the
	// spike). Data-stream frames are held to MaxFrameData by the codec.
	MaxControlMsgSize = 16 << 20

	// helloTimeout bounds how long a data stream may stay silent before its
	// hello.
	helloTimeout = 10 * time.Second
	// handshakeTimeout bounds a new connection's TLS and HTTP/2 handshake.
	handshakeTimeout = 10 * time.Second
)

// protoactorService is protoactor remote's gRPC service. Its only working
// method is the Receive stream; its unary methods panic ("implement me").
const protoactorService = "/remote.Remoting/"

// ServerOptions returns grpc server options for protoactor remote's server:
// TLS creds, interceptors that refuse protoactor's unimplemented unary calls
// (ListProcesses, GetProcessDiagnostics — every unary call of its service)
// with codes.Unimplemented instead of panicking, a recover for any panic in
// a handler, peer-id checks, keepalive enforcement, static windows, and the
// UnknownServiceHandler that serves [StreamMethod].
func ServerOptions(cfg ServerConfig) ([]grpc.ServerOption, error) {
	opts, err := serverOptions(cfg)
	if err != nil {
		return nil, err
	}
	return append(opts,
		grpc.StaticStreamWindowSize(streamWindow),
		grpc.StaticConnWindowSize(connWindow),
	), nil
}

// FarServerOptions returns the options of a second gRPC server of the
// proxy, on a port of its own, for the data streams of proxies of other
// regions ([WithFar] dials it): the same guard and handler as
// [ServerOptions] (it serves [StreamMethod] alone; protoactor's service is
// not on it), and no window option, so gRPC's BDP estimation sizes what it
// receives (64 KiB growing to 16 MiB per stream), as the Dialer's far
// connections size what they receive. A gRPC server has one set of windows
// for all its connections: on the shared peer port the static windows
// held an upload across an ocean to 1 MiB per round trip.
func FarServerOptions(cfg ServerConfig) ([]grpc.ServerOption, error) {
	return serverOptions(cfg)
}

// serverOptions are the options both servers share.
func serverOptions(cfg ServerConfig) ([]grpc.ServerOption, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sv := &server{handler: cfg.Handler, allow: cfg.AllowPeer, log: cfg.Logger}
	if sv.log == nil {
		sv.log = slog.New(slog.DiscardHandler)
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(cfg.Identity.ServerTLS())),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.ChainUnaryInterceptor(sv.unaryInterceptor),
		grpc.ChainStreamInterceptor(sv.streamInterceptor),
		grpc.UnknownServiceHandler(sv.serveStream),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    15 * time.Second,
			Timeout: 5 * time.Second,
		}),
		// Clients ping every 10 s (DialOptions); refuse anything faster.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(MaxControlMsgSize),
	}, nil
}

// server is the state behind one ServerOptions call.
type server struct {
	handler Handler
	allow   func(id string) bool
	log     *slog.Logger
}

func (sv *server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer sv.recoverTo(&err, info.FullMethod)
	if err := sv.checkPeer(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if strings.HasPrefix(info.FullMethod, protoactorService) {
		return nil, status.Errorf(codes.Unimplemented, "%s is not implemented by this proxy", info.FullMethod)
	}
	return handler(ctx, req)
}

func (sv *server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer sv.recoverTo(&err, info.FullMethod)
	if err := sv.checkPeer(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// recoverTo turns a panic in a handler into an Internal status; deferred
// directly so that recover sees the panic.
func (sv *server) recoverTo(err *error, method string) {
	if r := recover(); r != nil {
		sv.log.Error("peer: recovered from a panic in a gRPC handler",
			"method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "internal error in %s", method)
	}
}

func (sv *server) checkPeer(ctx context.Context, method string) error {
	id, ok := PeerID(ctx)
	if !ok {
		sv.log.Warn("peer: refused a call without a verified proxy certificate", "method", method)
		return status.Error(codes.Unauthenticated, "peer links need a client certificate from the cluster CA")
	}
	if sv.allow != nil && !sv.allow(id) {
		sv.log.Warn("peer: refused a call from a proxy that is not allowed", "peer", id, "method", method)
		return status.Errorf(codes.PermissionDenied, "proxy %q may not use this peer link: it is not a current cluster member", id)
	}
	return nil
}

// serveStream is the gRPC handler of every method no service registered. It
// serves StreamMethod and refuses the rest.
//
// The Handler runs in its own goroutine, not this one, because the only way
// to unblock a server's pending gRPC Send or Recv is to end the RPC, that
// is, to return from here: Close does exactly that. Otherwise this goroutine
// waits for the Handler and returns its result.
func (sv *server) serveStream(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	if method != StreamMethod {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	ctx := ss.Context()
	peerID, ok := PeerID(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "peer links need a client certificate from the cluster CA")
	}
	st := &serverStream{ss: ss, hello: make(chan struct{}), done: make(chan struct{})}
	result := make(chan error, 1)
	go func() { result <- sv.runHandler(ctx, peerID, st) }()

	timer := time.NewTimer(helloTimeout)
	defer timer.Stop()
	helloC, timeout := st.hello, timer.C
	for {
		select {
		case err := <-result:
			return sv.finish(st, peerID, err)
		case <-st.done:
			// Closed by the handler: end the RPC now. The handler goroutine's
			// pending calls fail with it and it returns by itself.
			return nil
		case <-helloC:
			helloC, timeout = nil, nil
		case <-timeout:
			return status.Errorf(codes.DeadlineExceeded, "no stream header within %v", helloTimeout)
		case <-ctx.Done():
			// The peer went away and the handler's gRPC calls fail; it owes
			// us its return.
			return sv.finish(st, peerID, <-result)
		}
	}
}

// runHandler reads the hello and calls the Handler, in the handler goroutine.
func (sv *server) runHandler(ctx context.Context, peerID string, st *serverStream) (err error) {
	defer sv.recoverTo(&err, StreamMethod)
	token, err := st.readHello()
	if err != nil {
		return err
	}
	close(st.hello)
	return sv.handler(ctx, peerID, token, st)
}

// finish turns the Handler's result into the RPC's status.
func (sv *server) finish(st *serverStream, peerID string, err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok || s.Code() == codes.Unknown {
		code := codes.Aborted
		if !st.accepted.Load() {
			code = codes.PermissionDenied
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			code = status.FromContextError(err).Code()
		}
		s = status.New(code, err.Error())
	}
	if !st.accepted.Load() {
		sv.log.Info("peer: refused a data stream", "peer", peerID, "code", s.Code().String(), "reason", s.Message())
	} else {
		sv.log.Debug("peer: data stream failed", "peer", peerID, "code", s.Code().String(), "reason", s.Message())
	}
	return s.Err()
}

// Accept accepts a stream given to a [Handler] before its first Read or
// Write, so the opener's Open returns. It does nothing on other streams.
func Accept(s Stream) error {
	if st, ok := s.(*serverStream); ok {
		return st.accept()
	}
	return nil
}

// serverStream is the Stream a Handler gets.
type serverStream struct {
	ss        grpc.ServerStream
	hello     chan struct{} // closed once the hello was read
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closed    atomic.Bool
	accepted  atomic.Bool

	readMu  sync.Mutex // serializes RecvMsg; guards the fields below
	in      inFrame
	readErr error // sticky: io.EOF after the client's CloseSend, or the failure

	writeMu     sync.Mutex // serializes SendMsg; guards the fields below
	out         outFrame
	writeClosed bool
}

var versionFrame = []byte{Version}

// readHello reads the first frame. It runs before the Handler, in its
// goroutine, so it needs no lock.
func (st *serverStream) readHello() (string, error) {
	if err := st.ss.RecvMsg(&st.in); err != nil {
		if err == io.EOF {
			return "", status.Error(codes.InvalidArgument, "the stream ended before its header")
		}
		return "", err
	}
	b := make([]byte, st.in.r.Remaining())
	_, _ = st.in.r.Read(b)
	return parseHello(b)
}

// parseHello parses a whole hello frame, type byte included, into its
// token. Its errors are gRPC statuses for the client to read.
func parseHello(b []byte) (string, error) {
	switch {
	case len(b) < 2 || b[0] != frameHello:
		typ := byte(0)
		if len(b) > 0 {
			typ = b[0]
		}
		return "", status.Errorf(codes.InvalidArgument, "the first frame must be a hello, got type %q with %d bytes", typ, len(b))
	case b[1] != Version:
		return "", status.Errorf(codes.FailedPrecondition, "unsupported peer stream version %d (this proxy speaks %d)", b[1], Version)
	case len(b) == 2 || len(b)-2 > maxTokenLen:
		return "", status.Errorf(codes.InvalidArgument, "the token must be 1 to %d bytes, got %d", maxTokenLen, len(b)-2)
	}
	return string(b[2:]), nil
}

func (st *serverStream) accept() error {
	if st.accepted.Load() {
		return nil
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.acceptLocked()
}

func (st *serverStream) acceptLocked() error {
	if st.accepted.Load() {
		return nil
	}
	if st.closed.Load() {
		return ErrClosed
	}
	if err := st.sendLocked(frameAccept, versionFrame); err != nil {
		return err
	}
	st.accepted.Store(true)
	return nil
}

func (st *serverStream) sendLocked(typ byte, p []byte) error {
	st.out = outFrame{typ: typ, payload: p}
	err := st.ss.SendMsg(&st.out)
	st.out.payload = nil
	if err == nil {
		return nil
	}
	if st.closed.Load() {
		return ErrClosed
	}
	if err == io.EOF {
		return errRemoteEnded
	}
	return fmt.Errorf("peer stream: send: %w", err)
}

func (st *serverStream) Read(p []byte) (int, error) {
	if err := st.accept(); err != nil {
		return 0, err
	}
	st.readMu.Lock()
	defer st.readMu.Unlock()
	for {
		if st.closed.Load() {
			return 0, ErrClosed
		}
		if st.in.r.Remaining() > 0 {
			n, _ := st.in.r.Read(p)
			return n, nil
		}
		if st.readErr != nil {
			return 0, st.readErr
		}
		if len(p) == 0 {
			return 0, nil
		}
		err := st.ss.RecvMsg(&st.in)
		switch {
		case err == io.EOF:
			st.readErr = io.EOF
		case err != nil:
			if st.closed.Load() {
				return 0, ErrClosed
			}
			st.readErr = fmt.Errorf("peer stream: receive: %w", err)
		default:
			if typ, n := st.in.next(), st.in.r.Remaining(); typ != frameData || n == 0 {
				st.in.discard()
				st.readErr = &ProtocolError{Msg: fmt.Sprintf("unexpected frame %q with %d bytes from the client", typ, n)}
			}
		}
	}
}

func (st *serverStream) Write(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if err := st.acceptLocked(); err != nil {
		return 0, err
	}
	if st.writeClosed {
		return 0, errWriteClosed
	}
	n := 0
	for len(p) > 0 {
		if st.closed.Load() {
			return n, ErrClosed
		}
		c := min(len(p), MaxFrameData)
		if err := st.sendLocked(frameData, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CloseWrite sends the EOF frame: the client's Read returns io.EOF once it
// has read everything before it, while the client may go on writing.
func (st *serverStream) CloseWrite() error {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if err := st.acceptLocked(); err != nil {
		return err
	}
	if st.writeClosed {
		return nil
	}
	st.writeClosed = true
	return st.sendLocked(frameEOF, nil)
}

// Close ends the stream both ways: the RPC ends at once (status OK, which
// the client reads as EOF after the data already sent), and pending Read and
// Write calls return ErrClosed.
func (st *serverStream) Close() error {
	st.closeOnce.Do(func() {
		st.closed.Store(true)
		close(st.done)
	})
	return nil
}
