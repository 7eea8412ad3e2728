package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/forward"
	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/actors/session"
	"github.com/warren-proxy/warren/actors/usercmd"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/usersh"
)

// userHandler serves the user SSH listener.
type userHandler struct{ p *Proxy }

// DirectTCPIP spawns a session actor for the channel. done, which frees
// the channel's place under usersh's caps, is called when the actor stops.
func (h userHandler) DirectTCPIP(ctx context.Context, c *usersh.Conn, t usersh.Target, nch ssh.NewChannel, done func()) {
	p := h.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = nch.Reject(ssh.ConnectionFailed, "warren: the proxy is shutting down; connect again")
		done()
		return
	}
	_, port, _ := net.SplitHostPort(p.publicAddr)
	props, err := session.NewProps(session.Config{
		ID:             newID(),
		ProxyID:        p.cfg.ID,
		User:           c.Identity.User,
		Identity:       usercmd.AccessIdentity(c.Identity),
		ClientAddr:     c.RemoteAddr.String(),
		Resource:       t.Host,
		Port:           t.Port,
		Channel:        nch,
		Table:          p.table,
		Audit:          p.auditor,
		Local:          forward.Local{System: p.system, Rendezvous: p.rendezvous},
		Peer:           forward.Peer{System: p.system, Streams: p.dialer},
		Sticky:         c,
		Live:           &p.live,
		UserConn:       ctx,
		Strategy:       p.cfg.Session.Strategy,
		Region:         p.cfg.Region,
		Load:           p.load,
		DialTimeout:    p.cfg.Session.DialTimeout,
		AttemptTimeout: p.cfg.Session.AttemptTimeout,
		Resume:         p.resumeTimeout(),
		Observer:       p.metrics,
		UserRTT:        c.RTT,
		ListHint:       fmt.Sprintf("; list resources with `warren ls` or `ssh -p %s %s@<proxy> ls`", port, c.Identity.User),
		Clock:          p.cfg.Clock,
		Logger:         p.log,
		Done: func() {
			done()
			p.sessions.Done()
		},
	})
	if err != nil {
		p.mu.Unlock()
		p.log.Error("session refused", "err", err)
		_ = nch.Reject(ssh.ConnectionFailed, "warren: the proxy cannot start a session; see its log")
		done()
		return
	}
	p.sessions.Add(1)
	p.mu.Unlock()
	p.system.Root.Spawn(props)
}

// Command runs a user's proxy command (ls, status, token add …).
func (h userHandler) Command(ctx context.Context, c *usersh.Conn, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return usercmd.Commands{P: commandView(h)}.Run(c.Identity, args, stdin, stdout, stderr)
}

// commandView is the proxy as the user commands see it.
type commandView struct{ p *Proxy }

func (v commandView) Snapshot() *router.Snapshot                  { return v.p.table.Snapshot() }
func (v commandView) Now() time.Time                              { return v.p.cfg.Clock() }
func (v commandView) Status() model.Statuses                      { return v.p.Status() }
func (v commandView) Put(key string, val any) error               { return v.p.put(key, val) }
func (v commandView) PutConfig(m *router.PutConfig) error         { return v.p.writeConfig(m) }
func (v commandView) PutDefinition(m *router.PutDefinition) error { return v.p.writeConfig(m) }
func (v commandView) CreateToken(req access.TokenRequest, by string) (string, access.Token, error) {
	return v.p.CreateToken(req, by)
}
func (v commandView) LocalAudit(q *clusterpb.AuditQuery) *clusterpb.AuditResult {
	return v.p.localAudit(q)
}
func (v commandView) ClusterAudit(q *clusterpb.AuditQuery) ([]audit.Event, bool, []string) {
	return v.p.clusterAudit(q)
}
func (v commandView) Help() string { return v.p.help() }

func (v commandView) Drain(user string) int {
	v.p.log.Warn("drain asked", "user", user)
	return v.p.Drain()
}

// resumeTimeout is how long a session looks for a new path to its agent,
// or 0 when resumable sessions are off.
func (p *Proxy) resumeTimeout() time.Duration {
	if p.cfg.Session.ResumeOff {
		return 0
	}
	return p.cfg.Session.ResumeTimeout
}
