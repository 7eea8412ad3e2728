package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func parseCertPEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("got %q, want a CERTIFICATE PEM block", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueTLSCertVerifies(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	now := time.Now()
	certPEM, keyPEM, err := a.IssueTLSCert("proxy-1", []string{"proxy-1.eu.example.com"}, []net.IP{net.ParseIP("10.0.0.1")}, 24*time.Hour, now)
	if err != nil {
		t.Fatalf("IssueTLSCert: %v", err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("tls.X509KeyPair: %v", err)
	}
	c := parseCertPEM(t, certPEM)
	if want := []string{"proxy-1", "proxy-1.eu.example.com"}; !slices.Equal(c.DNSNames, want) {
		t.Errorf("DNSNames: got %q, want %q", c.DNSNames, want)
	}
	if c.Subject.CommonName != "proxy-1" || !slices.Equal(c.Subject.Organization, []string{"test"}) {
		t.Errorf("Subject: got %v, want CN=proxy-1,O=test", c.Subject)
	}
	if c.IsCA {
		t.Error("IsCA: got true, want false")
	}

	tests := []struct {
		name    string
		pool    *x509.CertPool
		dnsName string
		usage   x509.ExtKeyUsage
		at      time.Time
		wantErr bool
	}{
		{"server by CN", a.TLSCertPool(), "proxy-1", x509.ExtKeyUsageServerAuth, now, false},
		{"server by DNS name", a.TLSCertPool(), "proxy-1.eu.example.com", x509.ExtKeyUsageServerAuth, now, false},
		{"server by IP", a.TLSCertPool(), "10.0.0.1", x509.ExtKeyUsageServerAuth, now, false},
		{"client", a.TLSCertPool(), "", x509.ExtKeyUsageClientAuth, now, false},
		{"wrong name", a.TLSCertPool(), "proxy-2", x509.ExtKeyUsageServerAuth, now, true},
		{"foreign pool", foreign.TLSCertPool(), "proxy-1", x509.ExtKeyUsageServerAuth, now, true},
		{"expired", a.TLSCertPool(), "proxy-1", x509.ExtKeyUsageServerAuth, now.Add(25 * time.Hour), true},
		{"before issue", a.TLSCertPool(), "proxy-1", x509.ExtKeyUsageServerAuth, now.Add(-2 * ClockSkew), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Verify(x509.VerifyOptions{
				Roots: tt.pool, DNSName: tt.dnsName, CurrentTime: tt.at,
				KeyUsages: []x509.ExtKeyUsage{tt.usage},
			})
			if got := err != nil; got != tt.wantErr {
				t.Errorf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestMutualTLS runs a real mutual TLS handshake on 127.0.0.1 between two
// certificates of the cluster, as two proxies peer.
func TestMutualTLS(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	keyPair := func(a *Authority, cn string) tls.Certificate {
		certPEM, keyPEM, err := a.IssueTLSCert(cn, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	server := keyPair(a, "proxy-1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientCAs:    a.TLSCertPool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				_, _ = io.WriteString(c, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
			})
		}
	})

	tests := []struct {
		name       string
		client     tls.Certificate
		serverName string
		wantPeer   string // what the server saw; empty means the handshake must fail
	}{
		{"cluster client", keyPair(a, "proxy-2"), "proxy-1", "proxy-2"},
		{"client of another cluster", keyPair(foreign, "proxy-2"), "proxy-1", ""},
		{"server name mismatch", keyPair(a, "proxy-2"), "proxy-9", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
				Certificates: []tls.Certificate{tt.client},
				RootCAs:      a.TLSCertPool(),
				ServerName:   tt.serverName,
				MinVersion:   tls.VersionTLS13,
			})
			if err != nil {
				if tt.wantPeer != "" {
					t.Fatalf("dial: %v", err)
				}
				return
			}
			defer c.Close()
			// In TLS 1.3 the server's verdict on the client certificate
			// arrives with the first read.
			got, err := io.ReadAll(c)
			if tt.wantPeer == "" {
				if err == nil && len(got) > 0 {
					t.Errorf("got server reply %q, want the handshake refused", got)
				}
				return
			}
			if err != nil || string(got) != tt.wantPeer {
				t.Errorf("got %q (error %v), want %q", got, err, tt.wantPeer)
			}
		})
	}
}

func TestIssueTLSCertRefuses(t *testing.T) {
	a := newTestAuthority(t)
	tests := []struct {
		name string
		cn   string
		dns  []string
		ips  []net.IP
		ttl  time.Duration
		want []string
	}{
		{"empty CN", "", nil, nil, time.Hour, []string{"common name is empty"}},
		{"long CN", strings.Repeat("a", 65), nil, nil, time.Hour, []string{"common name"}},
		{"bad DNS names", "p", []string{"a b", "-x.com", ""}, nil, time.Hour, []string{`DNS name "a b"`, `DNS name "-x.com"`, `DNS name ""`}},
		{"bad IP", "p", nil, []net.IP{{1, 2, 3}}, time.Hour, []string{"IP address"}},
		{"all problems at once", "", []string{"_"}, nil, 0, []string{"common name is empty", `DNS name "_"`, "TTL 0s"}},
		{"TTL too long", "p", nil, nil, MaxTLSCertTTL + time.Hour, []string{"longer than the maximum"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := a.IssueTLSCert(tt.cn, tt.dns, tt.ips, tt.ttl, time.Time{})
			checkProblems(t, err, tt.want)
		})
	}
}

func TestIssueTLSCertNeverOutlivesCA(t *testing.T) {
	a := newTestAuthority(t)
	nearEnd := a.TLSCert.NotAfter.Add(-time.Hour)
	certPEM, _, err := a.IssueTLSCert("p", nil, nil, 24*time.Hour, nearEnd)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCertPEM(t, certPEM).NotAfter; !got.Equal(a.TLSCert.NotAfter) {
		t.Errorf("NotAfter: got %v, want the CA's %v", got, a.TLSCert.NotAfter)
	}
	_, _, err = a.IssueTLSCert("p", nil, nil, time.Hour, a.TLSCert.NotAfter)
	if err == nil || !strings.Contains(err.Error(), "the cluster TLS CA expired at") {
		t.Errorf("after the CA's expiry: got error %v, want one saying the CA expired", err)
	}
}
