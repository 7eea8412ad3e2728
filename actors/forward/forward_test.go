package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/peer"
)

// These tests run a real actor system inside synctest bubbles: the tunnel
// actors are stand-ins that answer dial requests as a tunnel would.

// channel is an ssh.Channel that records its close.
type channel struct{ closed atomic.Bool }

func (c *channel) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *channel) Write(p []byte) (int, error) { return len(p), nil }
func (c *channel) Close() error                { c.closed.Store(true); return nil }
func (c *channel) CloseWrite() error           { return nil }
func (c *channel) SendRequest(string, bool, []byte) (bool, error) {
	return false, nil
}
func (c *channel) Stderr() io.ReadWriter { return nil }

var _ ssh.Channel = (*channel)(nil)

// tunnelStandIn parks ch in rv after delay and answers, as a tunnel does.
func tunnelStandIn(rv *Rendezvous, ch ssh.Channel, delay time.Duration, reqs chan<- *clusterpb.DialRequest) actor.ReceiveFunc {
	return func(ctx actor.Context) {
		req, ok := ctx.Message().(*clusterpb.DialRequest)
		if !ok {
			return
		}
		if reqs != nil {
			reqs <- req
		}
		sender, system := ctx.Sender(), ctx.ActorSystem()
		time.AfterFunc(delay, func() {
			token, err := rv.Park(ch)
			resp := &clusterpb.DialResponse{Ok: err == nil, Token: token, AgentId: "a1", PeerAddr: "p2:8443"}
			system.Root.Send(sender, resp)
		})
	}
}

func withSystem(t *testing.T, f func(t *testing.T, system *actor.ActorSystem)) {
	synctest.Test(t, func(t *testing.T) {
		system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
		f(t, system)
		system.Shutdown()
		// The bubble ends once every goroutine has: protoactor's
		// dead-letter throttle keeps one for its interval (1s), and a
		// future abandoned by its dial waits out its own timeout.
		time.Sleep(time.Minute)
	})
}

func endpoint(pid *actor.PID, local bool) router.Endpoint {
	return router.Endpoint{Resource: model.Resource{Name: "db", AgentID: "a1", ProxyID: "p2"}, Online: true, Tunnel: pid, Local: local}
}

func TestLocalDialClaimsTheParkedChannel(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		rv := NewRendezvous(0)
		defer rv.Close()
		ch := &channel{}
		reqs := make(chan *clusterpb.DialRequest, 1)
		pid := system.Root.Spawn(actor.PropsFromFunc(tunnelStandIn(rv, ch, 100*time.Millisecond, reqs)))
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
		defer cancel()
		st, err := Local{System: system, Rendezvous: rv}.Dial(ctx, endpoint(pid, true), &clusterpb.DialRequest{SessionId: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		if st != ssh.Channel(ch) {
			t.Errorf("got %v, want the parked channel", st)
		}
		if rv.Len() != 0 {
			t.Errorf("%d channels still parked", rv.Len())
		}
		// The tunnel is given the attempt less a share for the way back.
		if req := <-reqs; req.TimeoutMs != 3000 {
			t.Errorf("tunnel timeout %d ms, want 3000 (4s less 1s)", req.TimeoutMs)
		}
	})
}

func TestLocalDialToATunnelThatIsGoneFailsAtOnce(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		rv := NewRendezvous(0)
		defer rv.Close()
		pid := system.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		if err := system.Root.StopFuture(pid).Wait(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
		defer cancel()
		start := time.Now()
		_, err := Local{System: system, Rendezvous: rv}.Dial(ctx, endpoint(pid, true), &clusterpb.DialRequest{})
		if err == nil || !strings.Contains(err.Error(), "tunnel just closed") {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("took %s: a gone tunnel must fail at once", d)
		}
	})
}

func TestLocalDialClosesAChannelGrantedTooLate(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		rv := NewRendezvous(0)
		defer rv.Close()
		ch := &channel{}
		pid := system.Root.Spawn(actor.PropsFromFunc(tunnelStandIn(rv, ch, 2*time.Second, nil)))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := Local{System: system, Rendezvous: rv}.Dial(ctx, endpoint(pid, true), &clusterpb.DialRequest{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the attempt's deadline", err)
		}
		time.Sleep(2 * time.Second) // the tunnel answers now
		synctest.Wait()
		if !ch.closed.Load() || rv.Len() != 0 {
			t.Errorf("late channel closed %v, %d parked: want it closed at once, not after the TTL", ch.closed.Load(), rv.Len())
		}
	})
}

// opener opens data streams by claiming from the peer's rendezvous, as the
// peer's Server would.
type opener struct{ peer *Rendezvous }

func (o opener) Open(ctx context.Context, addr, token string) (peer.Stream, error) {
	if o.peer.Claim(token) == nil {
		return nil, errors.New("unknown or expired session token")
	}
	a, _ := netPipe()
	return a, nil
}

func TestPeerDialFailsAtOnceWhenTheLinkToThePeerBreaks(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		// A tunnel that never answers, on a proxy whose link breaks after
		// a second.
		pid := system.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		time.AfterFunc(time.Second, func() {
			system.EventStream.Publish(&remote.EndpointTerminatedEvent{Address: pid.Address})
		})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := Peer{System: system, Streams: opener{NewRendezvous(0)}}.Dial(ctx, endpoint(pid, false), &clusterpb.DialRequest{})
		if err == nil || !strings.Contains(err.Error(), "proxy p2 became unreachable") {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("failed after %s, want when the link broke (1s)", d)
		}
	})
}

func TestPeerDialOpensAStreamToTheParkedChannel(t *testing.T) {
	withSystem(t, func(t *testing.T, system *actor.ActorSystem) {
		remote := NewRendezvous(0) // the peer proxy's
		defer remote.Close()
		pid := system.Root.Spawn(actor.PropsFromFunc(tunnelStandIn(remote, &channel{}, 0, nil)))
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		st, err := Peer{System: system, Streams: opener{remote}}.Dial(ctx, endpoint(pid, false), &clusterpb.DialRequest{})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		if remote.Len() != 0 {
			t.Errorf("%d channels left parked at the peer", remote.Len())
		}
	})
}

func TestRendezvousClosesWhatNobodyClaims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rv := NewRendezvous(10 * time.Second)
		ch := &channel{}
		token, err := rv.Park(ch)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !ch.closed.Load() || rv.Claim(token) != nil {
			t.Error("an unclaimed channel outlived its time to live")
		}

		// A token is good once; a wrong one gets nothing.
		ch2 := &channel{}
		token, _ = rv.Park(ch2)
		if rv.Claim(token+"0") != nil || rv.Claim("") != nil {
			t.Error("a wrong token claimed a channel")
		}
		if rv.Claim(token) != ssh.Channel(ch2) || rv.Claim(token) != nil {
			t.Error("a token must claim its channel exactly once")
		}

		// Closing closes what waits and refuses what comes after.
		ch3, ch4 := &channel{}, &channel{}
		_, _ = rv.Park(ch3)
		rv.Close()
		if _, err := rv.Park(ch4); err == nil || !ch3.closed.Load() || !ch4.closed.Load() {
			t.Errorf("after Close: park err %v, waiting closed %v, new closed %v", err, ch3.closed.Load(), ch4.closed.Load())
		}
	})
}

// netPipe is a peer.Stream pair over net.Pipe.
func netPipe() (peer.Stream, peer.Stream) {
	a, b := net.Pipe()
	return pipeStream{a}, pipeStream{b}
}

type pipeStream struct{ net.Conn }

func (p pipeStream) CloseWrite() error { return p.Conn.Close() }
