package tunnel

import (
	"errors"
	"io"

	"github.com/warren-proxy/warren/transport/revtunnel"
)

// RecordingSink stores the session recordings agents upload (the proxy's
// recording store).
type RecordingSink interface {
	// StoreRecording checks that the offer's ticket was issued to agent
	// for the recording's session, and stores the cast read from r.
	StoreRecording(agent string, offer revtunnel.RecordingOffer, r io.Reader) error
	// MaxRecordingBytes bounds one recording.
	MaxRecordingBytes() int64
}

// Tickets signs the recording ticket of a session a tunnel dials.
type Tickets interface {
	SignTicket(t revtunnel.RecordingTicket) (string, error)
}

// Recording hands an upload to the proxy's store, with the agent's id as
// the tunnel's handshake authenticated it.
func (h handler) Recording(offer revtunnel.RecordingOffer, r io.Reader) error {
	if h.a.cfg.Recordings == nil {
		return errors.New("this proxy keeps no recordings")
	}
	return h.a.cfg.Recordings.StoreRecording(h.a.cfg.AgentID, offer, r)
}

// MaxRecordingBytes is the store's bound (1 byte without a store: every
// offer is refused before its bytes come).
func (h handler) MaxRecordingBytes() int64 {
	if h.a.cfg.Recordings == nil {
		return 1
	}
	return h.a.cfg.Recordings.MaxRecordingBytes()
}

// ticket signs the recording ticket of a new session this tunnel dials;
// "" when the proxy signs none or signing failed (the agent then records
// nothing it could upload, and says so).
func (a *Actor) ticket(req revtunnel.DialRequest) string {
	if a.cfg.Tickets == nil || req.Resume == revtunnel.ResumeAgain {
		return ""
	}
	s, err := a.cfg.Tickets.SignTicket(revtunnel.RecordingTicket{
		Session: req.SessionID, Agent: a.cfg.AgentID, User: req.User, Resource: req.Resource,
		Issued: a.cfg.Clock().Unix(),
	})
	if err != nil {
		a.cfg.Logger.Warn("sign recording ticket", "session", req.SessionID, "err", err)
		return ""
	}
	return s
}
