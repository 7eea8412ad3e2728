package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"

	"github.com/warren-proxy/warren/transport/pki"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runRemoteHelper(name))
	}
	// protoactor's Remote.Start sets gRPC's global logger; setting the same
	// quiet logger first keeps tests that do not start it just as quiet.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
	os.Exit(m.Run())
}

// newCA makes a cluster identity in a temporary directory.
func newCA(t testing.TB) *pki.Authority {
	t.Helper()
	a, err := pki.Init(t.TempDir(), pki.InitOptions{})
	if err != nil {
		t.Fatalf("pki.Init: %v", err)
	}
	return a
}

// newIdentity issues a proxy certificate named id by ca, trusting ca.
func newIdentity(t testing.TB, ca *pki.Authority, id string) Identity {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueTLSCert(id, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Time{})
	if err != nil {
		t.Fatalf("IssueTLSCert: %v", err)
	}
	id2, err := NewIdentity(certPEM, keyPEM, ca.TLSCertPool())
	if err != nil {
		t.Fatalf("NewIdentity: %v", err)
	}
	return id2
}

// testLogger sends package logs to the test's log, at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer serves cfg on a plain grpc.Server on 127.0.0.1:0. The server
// is stopped in t.Cleanup (and may be stopped earlier with the returned func).
func startServer(t testing.TB, cfg ServerConfig) (addr string, stop func()) {
	t.Helper()
	return serve(t, cfg, ServerOptions)
}

// startFarServer starts a server with FarServerOptions: a proxy's far port.
func startFarServer(t testing.TB, cfg ServerConfig) (addr string, stop func()) {
	t.Helper()
	return serve(t, cfg, FarServerOptions)
}

func serve(t testing.TB, cfg ServerConfig, options func(ServerConfig) ([]grpc.ServerOption, error)) (addr string, stop func()) {
	t.Helper()
	opts, err := options(cfg)
	if err != nil {
		t.Fatalf("server options: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// newDialer returns a Dialer closed in t.Cleanup.
func newDialer(t testing.TB, id Identity) *Dialer {
	d := NewDialer(id, nil)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// checkGoroutines registers a cleanup (run after the ones registered
// later, so after servers and dialers are stopped) that waits, bounded, for
// the goroutine count to come back to what it is now.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				var buf bytes.Buffer
				_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Errorf("goroutines: got %d after the test, want at most %d as before it:\n%s", n, base, buf.String())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// echoHandler echoes the sessions named by tokens and refuses others.
func echoHandler(tokens ...string) Handler {
	return func(ctx context.Context, peerID, token string, s Stream) error {
		if !slices.Contains(tokens, token) {
			return fmt.Errorf("unknown session token %q", token)
		}
		defer s.Close()
		buf := make([]byte, 32<<10)
		if _, err := io.CopyBuffer(onlyWriter{s}, onlyReader{s}, buf); err != nil {
			return err
		}
		return s.CloseWrite()
	}
}

// onlyReader and onlyWriter hide other methods so io.Copy uses the buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

// ctxT returns a context bounded by the test's deadline or a minute.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mustOpen opens a stream or fails the test.
func mustOpen(t testing.TB, d *Dialer, addr, token string) Stream {
	t.Helper()
	s, err := d.Open(ctxT(t), addr, token)
	if err != nil {
		t.Fatalf("Open(%s, %q): %v", addr, token, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// isClosedErr reports whether err is one of the "closed" errors Pipe treats
// as a normal end.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
