package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"regexp"
	"strings"
	"time"
)

// MaxTLSCertTTL is the longest lifetime of a TLS certificate.
const MaxTLSCertTTL = 365 * 24 * time.Hour

var dnsNameRE = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// IssueTLSCert makes a new ECDSA P-256 key and a certificate for it, signed by
// the TLS CA, usable both as a server and as a client certificate: the peer
// links between proxies are mutual TLS. If commonName is itself a DNS name it
// is added to the DNS names, since TLS clients check names only there. The
// certificate is valid from now-ClockSkew (zero now means time.Now()) for ttl,
// but never past the CA's own expiry. Both results are PEM, ready for
// tls.X509KeyPair.
func (a *Authority) IssueTLSCert(commonName string, dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	var errs []error
	if commonName == "" {
		errs = append(errs, errors.New("common name is empty"))
	} else if len(commonName) > 64 || strings.ContainsFunc(commonName, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("common name %q is not valid: use at most 64 printable characters", commonName))
	}
	for _, n := range dnsNames {
		if len(n) > 253 || !dnsNameRE.MatchString(n) {
			errs = append(errs, fmt.Errorf("DNS name %q is not valid", n))
		}
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			errs = append(errs, fmt.Errorf("IP address %v is not valid", ip))
		}
	}
	errs = append(errs, checkTTL(ttl, MaxTLSCertTTL))
	if a == nil || a.TLSCert == nil || a.TLSKey == nil {
		errs = append(errs, errors.New("no TLS CA loaded"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("issue TLS certificate: %w", err)
	}

	if now.IsZero() {
		now = time.Now()
	}
	if !now.Before(a.TLSCert.NotAfter) {
		return nil, nil, fmt.Errorf("issue TLS certificate: the cluster TLS CA expired at %s", a.TLSCert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.TLSCert.NotAfter) {
		notAfter = a.TLSCert.NotAfter
	}
	names := dedup(dnsNames)
	if net.ParseIP(commonName) == nil && dnsNameRE.MatchString(commonName) && !strings.HasPrefix(commonName, "*") {
		names = dedup(append([]string{commonName}, names...))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue TLS certificate: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue TLS certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkixName(commonName, a.ClusterName),
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.TLSCert, key.Public(), a.TLSKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issue TLS certificate for %s: %w", commonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue TLS certificate: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// TLSCertPool returns a pool holding only the cluster TLS CA: the roots for
// both sides of a peer link (tls.Config RootCAs and ClientCAs).
func (a *Authority) TLSCertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(a.TLSCert)
	return pool
}

func pkixName(commonName, cluster string) pkix.Name {
	n := pkix.Name{CommonName: commonName}
	if cluster != "" {
		n.Organization = []string{cluster}
	}
	return n
}

// randomSerial returns a random positive serial number of up to 128 bits.
func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // RFC 5280 wants it positive
}
