package revtunnel

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
)

// TestImpostorProxy: an agent's certificate comes from the agent CA, so an
// agent (or whoever stole its key) cannot pose as a proxy to other agents,
// even with a certificate whose id and names are a proxy's, to an agent
// that pinned or stored the host CA.
func TestImpostorProxy(t *testing.T) {
	a := newAuthority(t)
	hostCA := a.HostCA.PublicKey()
	pin := ssh.FingerprintSHA256(hostCA)

	start := func(signer ssh.Signer) *proxy {
		cfg := baseServerConfig(t, a)
		cfg.HostSigner = signer
		return startProxy(t, cfg)
	}
	// An agent granted the name of a real proxy: its certificate's id is a
	// principal, as a proxy's is, so only the CA tells them apart.
	posing := start(agentSigner(t, a, proxyID, proxyID))
	// A plain agent certificate.
	plain := start(agentSigner(t, a, "agent-evil", "web"))

	tests := []struct {
		name  string
		p     *proxy
		dial  bool // Dial a tunnel rather than Join
		trust Trust
		want  string
	}{
		{"join, ca_pin of the host CA", posing, false, Trust{Pin: pin}, "does not match ca_pin"},
		{"join, stored host CA", posing, false, Trust{CA: hostCA}, "not signed by the cluster host CA"},
		{"tunnel, stored host CA", posing, true, Trust{CA: hostCA}, "not signed by the cluster host CA"},
		{"join, ca_pin of the host CA, plain agent certificate", plain, false, Trust{Pin: pin}, "does not match ca_pin"},
		{"tunnel, stored host CA, plain agent certificate", plain, true, Trust{CA: hostCA}, "not signed by the cluster host CA"},
		// Even trusting on first use, a certificate that does not name its
		// own id, as every agent certificate does not, is no proxy's.
		{"join, trust on first use, plain agent certificate", plain, false, Trust{}, "presented an agent's certificate, not a proxy's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			joinsBefore := tt.p.joins.Load()
			var err error
			if tt.dial {
				var c *ClientConn
				c, _, err = Dial(ctx, ClientConfig{Addr: tt.p.addr, AgentID: "agent-1", Signer: agentSigner(t, a, "agent-1"), Trust: tt.trust}, Hello{Version: "test"})
				if c != nil {
					c.Close()
				}
			} else {
				key := newKey(t)
				req := JoinRequest{Name: "agent-1", PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey()))}
				var ca ssh.PublicKey
				_, ca, err = Join(ctx, tt.p.addr, goodToken, req, tt.trust)
				if ca != nil {
					t.Errorf("got CA %s from an impostor, want none", ssh.FingerprintSHA256(ca))
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a refusal of the impostor holding %q", err, tt.want)
			}
			if got := tt.p.joins.Load() - joinsBefore; got != 0 {
				t.Errorf("the impostor served %d joins, want 0: the agent must not send it its token", got)
			}
			select {
			case sc := <-tt.p.conns:
				sc.Close()
				t.Errorf("the impostor got a tunnel from %s", sc.AgentID)
			default:
			}
		})
	}
}

// TestDialChecksProxyID: the hello reply must name the proxy the host
// certificate is for, so one proxy cannot speak for another.
func TestDialChecksProxyID(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a)) // certificate for proxyID
	tests := []struct {
		name    string
		replyID string
		want    string // "" means the tunnel opens
	}{
		{"the certificate's id", proxyID, ""},
		{"another proxy's id", "proxy-2", `the proxy says it is "proxy-2" but its certificate is for "proxy-1"`},
		{"a prefix of the id", "proxy", `the proxy says it is "proxy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			h := &recHandler{reply: HelloReply{ProxyID: tt.replyID}}
			type dialed struct {
				c     *ClientConn
				reply HelloReply
				err   error
			}
			done := make(chan dialed, 1)
			go func() {
				c, reply, err := Dial(ctx, ClientConfig{Addr: p.addr, AgentID: "agent-1", Signer: agentSigner(t, a, "agent-1"), Trust: Trust{CA: a.HostCA.PublicKey()}}, Hello{Version: "test"})
				done <- dialed{c, reply, err}
			}()
			var sc *ServerConn
			select {
			case sc = <-p.conns:
			case d := <-done:
				t.Fatalf("Dial returned before the proxy accepted a tunnel: %v", d.err)
			case <-ctx.Done():
				t.Fatal("no tunnel reached the proxy")
			}
			served := make(chan struct{}) // closed when Serve returns
			go func() {
				defer close(served)
				_ = sc.Serve(h)
			}()
			defer func() {
				sc.Close()
				<-served
			}()
			d := <-done
			if d.c != nil {
				defer d.c.Close()
			}
			if tt.want == "" {
				if d.err != nil || d.reply.ProxyID != proxyID {
					t.Fatalf("Dial: got %+v, %v; want a tunnel to %s", d.reply, d.err, proxyID)
				}
				return
			}
			if d.err == nil || !strings.Contains(d.err.Error(), tt.want) {
				t.Fatalf("Dial: got %v, want a refusal holding %q", d.err, tt.want)
			}
			if d.c != nil {
				t.Error("Dial returned a tunnel along with its error")
			}
			// The agent hung up: the proxy's side of the tunnel ends.
			select {
			case <-served:
			case <-ctx.Done():
				t.Error("the refused tunnel stayed open at the proxy")
			}
		})
	}
}

// TestAuthorizeAgent: a certificate the agent CA signed still needs the
// proxy's AuthorizeAgent, which is asked only about valid certificates.
func TestAuthorizeAgent(t *testing.T) {
	a := newAuthority(t)
	var mu sync.Mutex // guards asked
	var asked []*ssh.Certificate
	cfg := baseServerConfig(t, a)
	cfg.AuthorizeAgent = func(cert *ssh.Certificate) error {
		mu.Lock()
		asked = append(asked, cert)
		mu.Unlock()
		if cert.KeyId == "locked" {
			return errors.New("agent locked is locked")
		}
		return nil
	}
	p := startProxy(t, cfg)
	askedAbout := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for _, c := range asked {
			ids = append(ids, c.KeyId)
		}
		return ids
	}

	key := newKey(t)
	const grant = `{"names":["web"]}`
	cert, err := a.IssueAgentCert(key.PublicKey(), pki.AgentCertRequest{ID: "agent-1", Names: []string{"web"}, Grant: grant, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	granted, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		id        string
		signer    ssh.Signer
		wantOK    bool
		wantAsked bool // AuthorizeAgent is asked about this certificate
	}{
		{"authorized", "agent-1", granted, true, true},
		{"refused by AuthorizeAgent", "locked", agentSigner(t, a, "locked"), false, true},
		{"invalid certificate: not asked", "proxy-x", hostSigner(t, a, "proxy-x", time.Time{}), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			before := len(askedAbout())
			if tt.wantOK {
				_, sc, _ := tunnel(t, p, tt.signer, tt.id, Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{})
				if sc.Cert == nil || sc.Cert.Serial != cert.Serial || sc.Cert.Extensions[pki.ExtAgentGrant] != grant {
					t.Errorf("got server conn certificate %v, want the agent's, with its grant", sc.Cert)
				}
			} else {
				c, _, err := Dial(ctx, ClientConfig{Addr: p.addr, AgentID: tt.id, Signer: tt.signer, Trust: Trust{CA: a.HostCA.PublicKey()}}, Hello{})
				if err == nil {
					c.Close()
					t.Fatal("Dial: got a tunnel, want a refusal")
				}
				if !strings.Contains(err.Error(), "refused this agent's certificate") {
					t.Errorf("got %q, want the certificate refusal", err)
				}
				select {
				case sc := <-p.conns:
					sc.Close()
					t.Errorf("the proxy accepted a tunnel for %s", sc.AgentID)
				default:
				}
			}
			got := askedAbout()[before:]
			if tt.wantAsked && (len(got) == 0 || got[len(got)-1] != tt.id) {
				t.Errorf("AuthorizeAgent was asked about %q, want %s", got, tt.id)
			}
			if !tt.wantAsked && len(got) != 0 {
				t.Errorf("AuthorizeAgent was asked about %q, want no call for an invalid certificate", got)
			}
		})
	}
}
