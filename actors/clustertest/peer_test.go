package clustertest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/transport/peer"
)

// TestPeerMustBeALiveMember: a TLS certificate from the cluster's TLS CA
// opens nothing on a proxy's peer port unless its proxy id is a live member
// of the gossip: a proxy that left, or a certificate minted for an id that
// never joined, is refused.
func TestPeerMustBeALiveMember(t *testing.T) {
	c := New(t, Options{})
	certPEM, keyPEM, err := c.Auth.IssueTLSCert("proxy-9", nil, nil, time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.NewIdentity(certPEM, keyPEM, c.Auth.TLSCertPool())
	if err != nil {
		t.Fatal(err)
	}
	d := peer.NewDialer(id, c.Logger)
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := d.Open(ctx, c.Proxy.PeerAddr(), "0123456789abcdef0123456789abcdef")
	if err == nil {
		st.Close()
		t.Fatal("a certificate for a proxy that is not a member opened a data stream")
	}
	// Were the peer admitted, the stream would reach the handler and fail
	// there ("unknown or expired session token").
	if !strings.Contains(err.Error(), `proxy "proxy-9" may not use this peer link`) {
		t.Fatalf("got %v, want the peer refused as not a member", err)
	}
}
