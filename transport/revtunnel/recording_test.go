package revtunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/warren-proxy/warren/internal/model"
)

// castHandler is a proxy that takes recordings: it keeps what it read.
type castHandler struct {
	*recHandler
	max int64

	mu     sync.Mutex
	stored map[string][]byte
}

func (h *castHandler) MaxRecordingBytes() int64 { return h.max }

func (h *castHandler) Recording(offer RecordingOffer, r io.Reader) error {
	if offer.Login == "early" {
		return errors.New("refused before reading: bad ticket")
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != offer.Size {
		return fmt.Errorf("got %d bytes, offered %d", len(b), offer.Size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != offer.SHA256 {
		return errors.New("sha256 does not match the offer")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stored[offer.ID] = b
	return nil
}

func offerFor(id string, cast []byte) RecordingOffer {
	sum := sha256.Sum256(cast)
	return RecordingOffer{ID: id, Ticket: "t", Size: int64(len(cast)), SHA256: hex.EncodeToString(sum[:])}
}

func TestUploadRecording(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &castHandler{recHandler: &recHandler{}, max: 1 << 20, stored: map[string][]byte{}}
	c, _, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if c.ProxyID != proxyID {
		t.Errorf("ClientConn.ProxyID = %q, want %q", c.ProxyID, proxyID)
	}
	cast := []byte(`{"version":2,"width":80,"height":24}` + "\n" + `[0.1,"o","hi"]` + "\n")
	if err := c.UploadRecording(ctx, offerFor("0a1b2c", cast), bytes.NewReader(cast)); err != nil {
		t.Fatalf("UploadRecording: %v", err)
	}
	h.mu.Lock()
	got := h.stored["0a1b2c"]
	h.mu.Unlock()
	if !bytes.Equal(got, cast) {
		t.Errorf("proxy stored %q, want %q", got, cast)
	}

	cases := []struct {
		name  string
		offer RecordingOffer
		body  []byte
		want  string
	}{
		{"longer than offered", offerFor("0a1b2d", cast[:10]), cast, "got 11 bytes, offered 10"},
		{"shorter than offered", offerFor("0a1b2e", cast), cast[:10], "got 10 bytes"},
		{"too large", RecordingOffer{ID: "0a1b2f", Size: 2 << 20, SHA256: strings.Repeat("0", 64)}, nil, "this proxy takes 1 to 1048576"},
		{"bad id", offerFor("../etc", cast), cast, `invalid recording id "../etc"`},
		{"bad sha", RecordingOffer{ID: "0a1b30", Size: 3, SHA256: "xyz"}, []byte("abc"), "sha256 must be 64 lowercase hex digits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.UploadRecording(ctx, tc.offer, bytes.NewReader(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestUploadRefusedEarly: a proxy that refuses without reading the cast
// (more than a channel window of it) still gets its reason to the agent.
func TestUploadRefusedEarly(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &castHandler{recHandler: &recHandler{}, max: 16 << 20, stored: map[string][]byte{}}
	c, _, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 6<<20)
	offer := offerFor("0a1b2c", big)
	offer.Login = "early"
	err := c.UploadRecording(ctx, offer, bytes.NewReader(big))
	if err == nil || !strings.Contains(err.Error(), "refused before reading: bad ticket") {
		t.Errorf("got %v, want the proxy's reason", err)
	}
}

// TestUploadRefusedWithoutHandler: a proxy whose handler takes no
// recordings refuses the channel as before.
func TestUploadRefusedWithoutHandler(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	c, _, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cast := []byte("x")
	err := c.UploadRecording(ctx, offerFor("0a1b2c", cast), bytes.NewReader(cast))
	if err == nil || !strings.Contains(err.Error(), "agents may not open channels to the proxy") {
		t.Errorf("got %v, want the channel refused", err)
	}
}

func TestTicket(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	tk := RecordingTicket{Session: "0a1b2c", Agent: "agent-1", User: "alice", Resource: "node1", Issued: 1700000000}
	s, err := SignTicket(a.HostCA, tk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyTicket(a.HostCA.PublicKey(), s)
	if err != nil {
		t.Fatalf("VerifyTicket: %v", err)
	}
	if got.Session != tk.Session || got.Agent != tk.Agent || got.User != tk.User || got.Resource != tk.Resource || got.Issued != tk.Issued {
		t.Errorf("got %+v, want %+v", got, tk)
	}
	if _, err := VerifyTicket(other.HostCA.PublicKey(), s); err == nil || !strings.Contains(err.Error(), "not signed by this cluster's proxies") {
		t.Errorf("another cluster's CA: got %v", err)
	}
	// An agent that changes the session (or anything) breaks the signature.
	forged := strings.Replace(decodeTicketJSON(t, s), `"agent-1"`, `"agent-2"`, 1)
	if _, err := VerifyTicket(a.HostCA.PublicKey(), encodeTicketJSON(forged)); err == nil {
		t.Error("a ticket whose agent was changed verified")
	}
	for _, bad := range []string{"", "!!!", encodeTicketJSON("{}"), encodeTicketJSON("[")} {
		if _, err := VerifyTicket(a.HostCA.PublicKey(), bad); err == nil {
			t.Errorf("VerifyTicket(%q) = nil error", bad)
		}
	}
}

func decodeTicketJSON(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func encodeTicketJSON(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) }

// FuzzRecordingOffer feeds arbitrary offers and tickets to what a proxy
// does with them before any byte of the cast: decode and Validate the
// offer, verify the ticket. Nothing may panic; an offer Validate accepts
// has a name for its id and a session it belongs to, a size within the
// bound and a hex SHA-256; a ticket that verifies names valid parties.
func FuzzRecordingOffer(f *testing.F) {
	ca := newKey(f)
	good, err := SignTicket(ca, RecordingTicket{Session: "0a1b2c", Agent: "agent-1", User: "alice", Resource: "node1", Issued: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"id":"0a1b2c","ticket":"x","size":10,"sha256":"`+strings.Repeat("a", 64)+`"}`), good)
	f.Add([]byte(`{"id":"0a1b2c-2","size":1,"sha256":"`+strings.Repeat("0", 64)+`","login":"root"}`), "")
	f.Add([]byte(`{"id":"../x","size":-1}`), "e30")
	f.Add([]byte(`null`), good[:len(good)/2])
	f.Fuzz(func(t *testing.T, payload []byte, ticket string) {
		var o RecordingOffer
		if json.Unmarshal(payload, &o) == nil && o.Validate(1<<20) == nil {
			if !model.ValidName(o.ID) || !validSession(SessionOf(o.ID)) || o.Size <= 0 || o.Size > 1<<20 || len(o.SHA256) != 64 {
				t.Fatalf("Validate accepted %+v", o)
			}
		}
		if tk, err := VerifyTicket(ca.PublicKey(), ticket); err == nil {
			if !validSession(tk.Session) || !model.ValidName(tk.Agent) || !model.ValidName(tk.Resource) || tk.User == "" {
				t.Fatalf("VerifyTicket accepted %+v", tk)
			}
		}
	})
}
