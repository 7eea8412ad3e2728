package pki

import (
	//lint:ignore SA1019 the test makes a DSA key to show it is refused
	"crypto/dsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestCertRefusals has one row per refusal of the one check: each names
// its kind, which callers test with errors.Is, and a piece of its message.
func TestCertRefusals(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	key := newKey(t)
	userCA := a.UserCA.PublicKey()
	client := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 40000}

	// user signs a user certificate for key with ca, shaped by edit.
	user := func(ca ssh.Signer, edit func(*ssh.Certificate)) *ssh.Certificate {
		c := &ssh.Certificate{
			Key: key.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
			ValidAfter: uint64(t0.Add(-ClockSkew).Unix()), ValidBefore: uint64(t0.Add(time.Hour).Unix()),
		}
		if edit != nil {
			edit(c)
		}
		return signCert(t, ca, c)
	}
	withOptions := func(opts map[string]string) func(*ssh.Certificate) {
		return func(c *ssh.Certificate) { c.CriticalOptions = opts }
	}

	// A CA key that is itself a certificate, trusted by mistake.
	caKey := newKey(t)
	caCert := signCert(t, a.UserCA, &ssh.Certificate{Key: caKey.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"ca"}, ValidBefore: ssh.CertTimeInfinity})
	// x/crypto will not sign with a certificate; sign by hand, as a
	// forger would.
	byCertificate := user(a.UserCA, nil)
	byCertificate.SignatureKey = caCert
	byCertificate.Signature = nil
	data := byCertificate.Marshal()
	sig, err := caKey.Sign(rand.Reader, data[:len(data)-4])
	if err != nil {
		t.Fatal(err)
	}
	byCertificate.Signature = sig

	dsaPriv := new(dsa.PrivateKey)
	if err := dsa.GenerateParameters(&dsaPriv.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(dsaPriv, rand.Reader); err != nil {
		t.Fatal(err)
	}
	dsaPub, err := ssh.NewPublicKey(&dsaPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := ssh.NewPublicKey(&rsaPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	host, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "node1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	tampered := *user(a.UserCA, nil)
	tampered.ValidPrincipals = []string{"root"}

	tests := []struct {
		name    string
		pub     ssh.PublicKey
		opts    CertOptions
		kind    error  // nil: accepted
		wantMsg string // in the message
	}{
		{"valid", user(a.UserCA, nil), CertOptions{}, nil, ""},
		{"wanted principal present", user(a.UserCA, nil), CertOptions{Principal: "alice"}, nil, ""},
		{"plain key", key.PublicKey(), CertOptions{}, ErrNotCertificate, "not a certificate"},
		{"wrong CA", user(foreign.UserCA, nil), CertOptions{Authorities: []ssh.PublicKey{userCA}}, ErrUnknownAuthority, "not signed by the cluster user CA"},
		{"host CA is not the user CA", user(a.HostCA, nil), CertOptions{}, ErrUnknownAuthority, "not signed by the cluster user CA"},
		{"host certificate as user certificate", host, CertOptions{Authorities: []ssh.PublicKey{a.HostCA.PublicKey(), userCA}}, ErrCertType, "is a host certificate"},
		{"signed by a certificate", byCertificate, CertOptions{Authorities: []ssh.PublicKey{caCert, userCA}}, ErrUnknownAuthority, "signed by another certificate"},
		{"tampered", &tampered, CertOptions{}, ErrBadSignature, "signature is invalid"},
		{"expired", user(a.UserCA, nil), CertOptions{Now: t0.Add(time.Hour)}, ErrExpired, "expired at 2026-05-06T08:08:09Z"},
		{"not yet valid", user(a.UserCA, nil), CertOptions{Now: t0.Add(-ClockSkew - time.Second)}, ErrNotYetValid, "not valid before 2026-05-06T07:07:09Z"},
		{"start past int64", user(a.UserCA, func(c *ssh.Certificate) { c.ValidAfter = 1 << 63 }), CertOptions{}, ErrNotYetValid, "not valid before the end of time"},
		{"end past int64 is not forever", user(a.UserCA, func(c *ssh.Certificate) { c.ValidBefore = 1<<64 - 2 }), CertOptions{}, ErrExpired, "expired"},
		{"unknown critical option", user(a.UserCA, withOptions(map[string]string{"verify-required": ""})), CertOptions{}, ErrCriticalOption, "critical options verify-required, which Warren does not enforce"},
		{"force-command where none enforces it", user(a.UserCA, withOptions(map[string]string{"force-command": "true"})), CertOptions{}, ErrCriticalOption, "force-command"},
		{"force-command where it is enforced", user(a.UserCA, withOptions(map[string]string{"force-command": "true"})), CertOptions{CriticalOptions: []string{"force-command"}}, nil, ""},
		{"no principals", user(a.UserCA, func(c *ssh.Certificate) { c.ValidPrincipals = nil }), CertOptions{}, ErrNoPrincipals, "names no logins"},
		{"missing principal", user(a.UserCA, nil), CertOptions{Principal: "root"}, ErrPrincipal, `does not allow login "root"; its logins: alice`},
		{"source-address match", user(a.UserCA, withOptions(map[string]string{"source-address": "192.0.2.1,10.0.0.0/8"})), CertOptions{ClientAddr: client}, nil, ""},
		{"source-address mismatch", user(a.UserCA, withOptions(map[string]string{"source-address": "192.0.2.0/24"})), CertOptions{ClientAddr: client}, ErrSourceAddress, "only from 192.0.2.0/24, not from 10.1.2.3"},
		{"source-address without a client address", user(a.UserCA, withOptions(map[string]string{"source-address": "10.0.0.0/8"})), CertOptions{}, ErrSourceAddress, "address is unknown"},
		{"malformed source-address", user(a.UserCA, withOptions(map[string]string{"source-address": "nowhere"})), CertOptions{ClientAddr: client}, ErrSourceAddress, "malformed"},
		{"DSA key", user(a.UserCA, func(c *ssh.Certificate) { c.Key = dsaPub }), CertOptions{}, ErrKeyType, "ssh-dss"},
		{"short RSA key", user(a.UserCA, func(c *ssh.Certificate) { c.Key = rsaPub }), CertOptions{}, ErrKeyType, "shorter than 2048 bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Authorities == nil {
				opts.Authorities = []ssh.PublicKey{foreign.UserCA.PublicKey(), userCA}
			}
			if opts.Now.IsZero() {
				opts.Now = t0
			}
			cert, err := CheckUserCert(tt.pub, opts)
			if tt.kind == nil {
				if err != nil || cert == nil {
					t.Fatalf("got %v, want the certificate accepted", err)
				}
				return
			}
			var ce *CertError
			if !errors.Is(err, tt.kind) || !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %v, want a %q refusal saying %q", err, tt.kind, tt.wantMsg)
			}
			if cert != nil {
				t.Error("got a certificate along with the error")
			}
		})
	}
}

// TestHostCertRefusals covers what only host certificates are refused for;
// the rules they share with user certificates are tested above.
func TestHostCertRefusals(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	host := func(edit func(*ssh.Certificate)) *ssh.Certificate {
		c := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.HostCert, KeyId: "node1", ValidPrincipals: []string{"node1"}, ValidBefore: ssh.CertTimeInfinity}
		if edit != nil {
			edit(c)
		}
		return signCert(t, a.HostCA, c)
	}
	user, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  ssh.PublicKey
		kind error
	}{
		{"valid", host(nil), nil},
		{"user certificate as host certificate", user, ErrCertType},
		{"no principals", host(func(c *ssh.Certificate) { c.ValidPrincipals = nil }), ErrNoPrincipals},
		{"wrong host", host(func(c *ssh.Certificate) { c.ValidPrincipals = []string{"node2"} }), ErrPrincipal},
		{"source-address means nothing on a host", host(func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8"} }), ErrCriticalOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := CertOptions{Authorities: []ssh.PublicKey{a.HostCA.PublicKey(), a.UserCA.PublicKey()}, Now: t0, Principal: "node1",
				ClientAddr: &net.TCPAddr{IP: net.ParseIP("10.0.0.1")}}
			_, err := CheckHostCert(tt.pub, opts)
			if tt.kind == nil && err != nil || tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("got %v, want %v", err, tt.kind)
			}
		})
	}
}

// TestHostKeyCallback checks the client side: the dialed host name is the
// principal, and plain keys go to the fallback.
func TestHostKeyCallback(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	cert, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "proxy-1", Principals: []string{"127.0.0.1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return t0 }
	var fellBack bool
	cb := HostKeyCallback([]ssh.PublicKey{a.HostCA.PublicKey()}, clock, func(string, net.Addr, ssh.PublicKey) error { fellBack = true; return nil })
	if err := cb("127.0.0.1:3022", nil, cert); err != nil {
		t.Errorf("certificate for 127.0.0.1: %v", err)
	}
	if err := cb("127.0.0.2:3022", nil, cert); !errors.Is(err, ErrPrincipal) {
		t.Errorf("certificate dialed as 127.0.0.2: got %v, want a principal refusal", err)
	}
	if err := cb("127.0.0.1:3022", nil, key.PublicKey()); err != nil || !fellBack {
		t.Errorf("plain key: got %v, fallback called %v", err, fellBack)
	}
	strict := HostKeyCallback([]ssh.PublicKey{a.HostCA.PublicKey()}, clock, nil)
	if err := strict("127.0.0.1:3022", nil, key.PublicKey()); err == nil {
		t.Error("plain key without fallback: got nil, want a refusal")
	}
	late := HostKeyCallback([]ssh.PublicKey{a.HostCA.PublicKey()}, func() time.Time { return t0.Add(2 * time.Hour) }, nil)
	if err := late("127.0.0.1:3022", nil, cert); !errors.Is(err, ErrExpired) {
		t.Errorf("expired certificate: got %v, want expired", err)
	}
}

func TestCertTTL(t *testing.T) {
	a := newTestAuthority(t)
	cert, err := a.IssueUserCert(newKey(t).PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: 8 * time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if got := CertTTL(cert); got != 8*time.Hour {
		t.Errorf("CertTTL = %s, want 8h", got)
	}
	if got := CertTTL(&ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}); got != 0 {
		t.Errorf("CertTTL of a certificate without end = %s, want 0", got)
	}
}
