package revtunnel

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
)

// Session recordings: the agent's embedded SSH server records PTY
// sessions, spools them on disk, and uploads each to the proxies over its
// tunnels, on a channel it opens:
//
//	agent                                        proxy
//	  |-- open "recording@warren.dev" ------------->|  extra data: RecordingOffer (JSON)
//	  |                                             |  checked: ticket signed by the cluster's
//	  |                                             |  proxy host CA, issued to this tunnel's
//	  |                                             |  agent for this session; size capped
//	  |<- open confirmation (or failure + reason) --|
//	  |== Size bytes of asciicast v2, then EOF ====>|  read, hashed, checked, stored
//	  |<- one JSON line: UploadResult, then close --|
//
// The ticket is what binds a recording to the agent that served the
// session: the proxy whose tunnel dials a session signs one
// (RecordingTicket) and sends it in the DialRequest; any proxy of the
// cluster checks it with the proxy host CA's public key, so the agent
// may upload to any of them, now or after a restart, and an agent cannot
// upload a recording for a session another agent served.

// ChanRecording is the channel type an agent opens to upload a recording.
const ChanRecording = "recording@warren.dev"

// MaxOfferPayload bounds a RecordingOffer (the ticket holds a signature).
const MaxOfferPayload = 8 << 10

// RecordingTicket is the proxy's word that Agent served Session, for User
// on Resource. It travels base64-encoded (EncodeTicket); Sig is an SSH
// signature by the proxy host CA over ticketSignedBytes.
type RecordingTicket struct {
	Session  string `json:"session"`
	Agent    string `json:"agent"`
	User     string `json:"user"`
	Resource string `json:"resource"`
	// Issued is when the ticket was signed (Unix seconds); tickets do not
	// expire: a spool may hold a recording for days while proxies are away.
	Issued int64  `json:"issued"`
	Sig    []byte `json:"sig,omitempty"`
}

// ticketDomain separates ticket signatures from everything else the key
// signs (certificates begin with a length and a key type, never this).
const ticketDomain = "warren-recording-ticket-v1\x00"

func (t RecordingTicket) signedBytes() []byte {
	t.Sig = nil
	b, _ := json.Marshal(t)
	return append([]byte(ticketDomain), b...)
}

// SignTicket signs t with signer (the proxy host CA) and encodes it.
func SignTicket(signer ssh.Signer, t RecordingTicket) (string, error) {
	sig, err := signer.Sign(nil, t.signedBytes())
	if err != nil {
		return "", fmt.Errorf("sign recording ticket: %w", err)
	}
	t.Sig = ssh.Marshal(sig)
	b, _ := json.Marshal(t)
	return base64.RawStdEncoding.EncodeToString(b), nil
}

// VerifyTicket decodes a ticket and checks its signature against ca.
func VerifyTicket(ca ssh.PublicKey, s string) (RecordingTicket, error) {
	var t RecordingTicket
	if len(s) > MaxOfferPayload {
		return t, errors.New("recording ticket too long")
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return t, errors.New("recording ticket is not base64")
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, errors.New("recording ticket does not decode")
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(t.Sig, &sig); err != nil {
		return t, errors.New("recording ticket has no signature")
	}
	if err := ca.Verify(t.signedBytes(), &sig); err != nil {
		return t, errors.New("recording ticket is not signed by this cluster's proxies")
	}
	if !validSession(t.Session) || !model.ValidName(t.Agent) || !model.ValidName(t.Resource) || t.User == "" || len(t.User) > 128 {
		return t, errors.New("recording ticket names an invalid session, agent, user or resource")
	}
	return t, nil
}

func validSession(s string) bool { return s != "" && len(s) <= 64 && model.ValidName(s) }

// RecordingOffer is the extra data of a ChanRecording channel.
type RecordingOffer struct {
	// ID is the recording's id: the session id for a connection's first
	// PTY session, "<session>-N" for its N-th session channel.
	ID     string `json:"id"`
	Ticket string `json:"ticket"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex of the cast's bytes
	// Login is the unix login the session ran as (the agent's word).
	Login string `json:"login,omitempty"`
}

// Validate checks the offer's form (not its ticket).
func (o RecordingOffer) Validate(maxSize int64) error {
	session, _, _ := strings.Cut(o.ID, "-")
	switch {
	case len(o.ID) > 72 || !model.ValidName(o.ID) || !validSession(session):
		return fmt.Errorf("invalid recording id %s", model.Quote(o.ID))
	case o.Size <= 0 || o.Size > maxSize:
		return fmt.Errorf("recording of %d bytes; this proxy takes 1 to %d", o.Size, maxSize)
	case len(o.SHA256) != 64 || strings.Trim(o.SHA256, "0123456789abcdef") != "":
		return errors.New("sha256 must be 64 lowercase hex digits")
	case len(o.Login) > 32 || strings.ContainsFunc(o.Login, func(r rune) bool { return r <= ' ' || r > '~' }):
		return fmt.Errorf("invalid login %s", model.Quote(o.Login))
	}
	return nil
}

// SessionOf is the session a recording id belongs to.
func SessionOf(id string) string {
	s, _, _ := strings.Cut(id, "-")
	return s
}

// UploadResult is the proxy's last word on an upload.
type UploadResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// RecordingHandler, when the Handler given to Serve implements it, takes
// the recordings the agent uploads. Recording is called on a goroutine of
// its own, for an offer whose form is valid; it reads the cast from r
// (exactly offer.Size bytes are let through) and returns nil once it is
// stored, or why not.
type RecordingHandler interface {
	Recording(offer RecordingOffer, r io.Reader) error
	// MaxRecordingBytes bounds an offer's size.
	MaxRecordingBytes() int64
}

// maxUploadsPerTunnel bounds the uploads one tunnel runs at once.
const maxUploadsPerTunnel = 2

// serveRecording accepts one upload channel and runs rh on it.
func (c *ServerConn) serveRecording(nch ssh.NewChannel, rh RecordingHandler) {
	var offer RecordingOffer
	if len(nch.ExtraData()) > MaxOfferPayload {
		_ = nch.Reject(ssh.Prohibited, "recording offer too large")
		return
	}
	if err := json.Unmarshal(nch.ExtraData(), &offer); err != nil {
		_ = nch.Reject(ssh.Prohibited, "malformed recording offer: "+err.Error())
		return
	}
	if err := offer.Validate(rh.MaxRecordingBytes()); err != nil {
		_ = nch.Reject(ssh.Prohibited, "recording refused: "+err.Error())
		return
	}
	if c.uploads.Add(1) > maxUploadsPerTunnel {
		c.uploads.Add(-1)
		_ = nch.Reject(ssh.ResourceShortage, "too many uploads at once on this tunnel; try again later")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		c.uploads.Add(-1)
		return
	}
	go ssh.DiscardRequests(reqs)
	c.uploadWG.Add(1)
	go func() {
		defer c.uploadWG.Done()
		defer c.uploads.Add(-1)
		defer ch.Close()
		// One byte more than offered is read, so that a longer stream
		// fails the size check instead of being cut silently.
		err := rh.Recording(offer, io.LimitReader(ch, offer.Size+1))
		res := UploadResult{OK: err == nil}
		if err != nil {
			res.Error = err.Error()
		}
		_, _ = ch.Write(append(encode(res), '\n'))
		_ = ch.CloseWrite()
	}()
}

// UploadRecording sends one recording to the proxy and waits for its
// verdict (or ctx).
func (c *ClientConn) UploadRecording(ctx context.Context, offer RecordingOffer, cast io.Reader) error {
	ch, reqs, err := c.conn.OpenChannel(ChanRecording, encode(offer))
	if err != nil {
		var oc *ssh.OpenChannelError
		if errors.As(err, &oc) {
			return fmt.Errorf("upload recording %s: %s", offer.ID, oc.Message)
		}
		return fmt.Errorf("upload recording %s: %w", offer.ID, err)
	}
	go ssh.DiscardRequests(reqs)
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	// A proxy that refuses the recording early (its ticket) says why and
	// closes without reading the rest: the write then fails, and the
	// verdict, which came first, is still there to read.
	_, copyErr := io.Copy(ch, cast)
	if copyErr == nil {
		_ = ch.CloseWrite()
	}
	line, err := bufio.NewReader(io.LimitReader(ch, 4096)).ReadBytes('\n')
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("upload recording %s: %w", offer.ID, ctx.Err())
		case copyErr != nil:
			return fmt.Errorf("upload recording %s: %w", offer.ID, copyErr)
		}
		return fmt.Errorf("upload recording %s: no verdict from the proxy: %w", offer.ID, err)
	}
	var res UploadResult
	if err := json.Unmarshal(line, &res); err != nil {
		return fmt.Errorf("upload recording %s: malformed verdict from the proxy", offer.ID)
	}
	if !res.OK {
		return fmt.Errorf("upload recording %s: the proxy refused it: %s", offer.ID, res.Error)
	}
	// OK, even if the proxy stopped reading early: it held these bytes
	// already (the offer's SHA-256 is the stored one's).
	return nil
}
