package session

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

// What a proxy's status page sees of a session (Live.Sessions and
// Live.Failovers). The session's own fields are written by its goroutines
// without locks; what the page reads while the session runs is kept here,
// in atomics.

// shown is what the status page reads of a running session.
type shown struct {
	login atomic.Pointer[string]
	// hop is the path of the newest resumed hop, the From of the next
	// resume; lost is why the path before it broke.
	hop, lost atomic.Pointer[string]
	resumes   atomic.Int32
}

// maxReason bounds a failover's reason: errors may carry what an agent
// said.
const maxReason = 200

// live is s as Live.Sessions lists it. The caller holds Live's lock, so
// the fields connected wrote before Live.add are visible.
func (s *Session) live() model.LiveSession {
	ls := model.LiveSession{
		ID: s.cfg.ID, User: s.cfg.User, Resource: s.cfg.Resource, Agent: s.agentID,
		Path: s.pathString(), Started: s.started, Resumes: int(s.shown.resumes.Load()),
	}
	if p := s.resumedPath.Load(); p != nil {
		ls.Path = *p
	}
	if l := s.shown.login.Load(); l != nil {
		ls.Login = *l
	}
	return ls
}

// showLogin publishes the login the node reported.
func (s *Session) showLogin(login string) { s.shown.login.Store(&login) }

// pathOf is the path from this proxy to the agent behind e.
func (s *Session) pathOf(e router.Endpoint) string {
	if e.Local {
		return s.cfg.ProxyID + ">" + e.AgentID
	}
	return s.cfg.ProxyID + ">" + e.ProxyID + ">" + e.AgentID
}

// failedOver records that the session connected through to after the
// candidate from failed with err; it records nothing when no candidate
// failed (err nil).
func (s *Session) failedOver(from, to router.Endpoint, err error) {
	if err == nil || s.cfg.Live == nil {
		return
	}
	s.cfg.Live.addFailover(model.Failover{
		Time: s.cfg.Clock(), Kind: model.FailoverConnect, Session: s.cfg.ID, Resource: s.cfg.Resource,
		From: s.pathOf(from), To: s.pathOf(to), Reason: cut(err.Error()),
	})
}

// pathLost remembers why the session's path to its agent broke, for the
// failover its resume records.
func (s *Session) pathLost(err error) {
	if err == nil {
		return
	}
	why := cut(err.Error())
	s.shown.lost.Store(&why)
}

// resumedOver records that the session to the agent behind e (its first
// path) resumed over path after stalling.
func (s *Session) resumedOver(e router.Endpoint, path string, stalled time.Duration) {
	s.shown.resumes.Add(1)
	from := s.pathOf(e)
	if p := s.shown.hop.Swap(&path); p != nil {
		from = *p
	}
	if s.cfg.Live == nil {
		return
	}
	reason := fmt.Sprintf("stalled %s", stalled.Round(time.Millisecond))
	if why := s.shown.lost.Load(); why != nil {
		reason = *why + "; " + reason
	}
	s.cfg.Live.addFailover(model.Failover{
		Time: s.cfg.Clock(), Kind: model.FailoverResume, Session: s.cfg.ID, Resource: s.cfg.Resource,
		From: from, To: path, Reason: reason,
	})
}

func cut(s string) string {
	if len(s) > maxReason {
		return s[:maxReason] + "…"
	}
	return s
}
