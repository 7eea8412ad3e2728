package session

import (
	"context"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/clusterpb"
)

// Actor is the session actor: the session's mailbox and lifecycle. It
// runs [Session.Run] from its start, hands it the login reports tunnels
// send, and stops when the session has ended; stopping it from outside
// ends the session.
type Actor struct {
	s      *Session
	cancel context.CancelFunc
	ended  chan struct{}
}

// NewProps returns props for a session actor, or an error naming what cfg
// lacks.
func NewProps(cfg Config) (*actor.Props, error) {
	if _, err := New(cfg); err != nil {
		return nil, err
	}
	return actor.PropsFromProducer(func() actor.Actor {
		s, _ := New(cfg) // cfg was checked above
		return &Actor{s: s}
	}), nil
}

// Receive dispatches messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		self, system := ctx.Self(), ctx.ActorSystem()
		a.s.replyTo = self
		runCtx, cancel := context.WithCancel(context.Background())
		a.cancel, a.ended = cancel, make(chan struct{})
		go func() {
			defer system.Root.Stop(self)
			defer close(a.ended)
			a.s.Run(runCtx)
		}()
	case *clusterpb.LoginReport:
		a.s.Report(m)
	case *actor.Stopping:
		a.cancel()
		<-a.ended
	case *actor.Stopped:
		if a.s.cfg.Done != nil {
			a.s.cfg.Done()
		}
	}
}
