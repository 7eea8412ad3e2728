package proxy

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/warren-proxy/warren/cluster/clusterpb"
)

// A proxy that keeps sending to a peer that is down must not pile up gRPC
// connections: protoactor remote used to dial a new one on every retry and
// drop the old one unclosed.
func TestUnreachablePeerLeavesNoConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	before := goleak.IgnoreCurrent()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	r := remote.NewRemote(sys, peerRemoteConfig("127.0.0.1", 0,
		remote.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))))
	if err := startRemote(r); err != nil {
		t.Fatal(err)
	}
	terminated := make(chan struct{}, 1)
	sys.EventStream.Subscribe(func(msg any) {
		if ev, ok := msg.(*remote.EndpointTerminatedEvent); ok && ev.Address == dead {
			select {
			case terminated <- struct{}{}:
			default:
			}
		}
	})
	for i := range 2 {
		sys.Root.Send(actor.NewPID(dead, "router"), &clusterpb.DialRequest{})
		select {
		case <-terminated:
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d: no EndpointTerminatedEvent for %s after 30 s", i, dead)
		}
	}
	r.Shutdown(true)

	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err = goleak.Find(before)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind by messages to an unreachable peer: %v", err)
		}
	}
}
