package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
)

// Identity is a proxy's TLS identity: certificate (CN = proxy id) and the
// cluster CA.
type Identity struct {
	Cert tls.Certificate
	CAs  *x509.CertPool
}

// NewIdentity parses a PEM certificate and key (as pki's IssueTLSCert returns
// them) into an Identity trusting cas.
func NewIdentity(certPEM, keyPEM []byte, cas *x509.CertPool) (Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("parse peer certificate: %w", err)
	}
	if cas == nil {
		return Identity{}, errors.New("parse peer certificate: no cluster CA pool given")
	}
	return Identity{Cert: cert, CAs: cas}, nil
}

// ProxyID returns the proxy id in the identity's own certificate (its CN),
// or "" if it has none.
func (id Identity) ProxyID() string {
	leaf := id.Cert.Leaf
	if leaf == nil && len(id.Cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(id.Cert.Certificate[0])
	}
	if leaf == nil {
		return ""
	}
	return leaf.Subject.CommonName
}

func (id Identity) validate() []error {
	var errs []error
	if len(id.Cert.Certificate) == 0 || id.Cert.PrivateKey == nil {
		errs = append(errs, errors.New("Identity.Cert: a certificate with its private key is required"))
	} else if id.ProxyID() == "" {
		errs = append(errs, errors.New("Identity.Cert: the certificate has no common name (the proxy id)"))
	}
	if id.CAs == nil {
		errs = append(errs, errors.New("Identity.CAs: the cluster CA pool is required"))
	}
	return errs
}

func (id Identity) certificates() []tls.Certificate {
	if len(id.Cert.Certificate) == 0 {
		return nil
	}
	return []tls.Certificate{id.Cert}
}

// ServerTLS returns the server side of a peer link: TLS 1.3 only, and a
// client certificate that chains to the cluster CA is required.
func (id Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: id.certificates(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.CAs,
	}
}

// ClientTLS returns the client side of a peer link. The server's chain is
// verified against the cluster CA without matching a host name: proxies are
// dialled by IP and known by the proxy id in their leaf's CN, not by DNS.
func (id Identity) ClientTLS() *tls.Config {
	cas := id.CAs
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: id.certificates(),
		// Go's verifier always matches a host name, so it is turned off here
		// and VerifyConnection does the chain check without one. It runs on
		// every handshake, resumed ones included.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyChain(cs.PeerCertificates, cas, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// verifyChain verifies certs (leaf first) against cas and returns the proxy
// id of the leaf.
func verifyChain(certs []*x509.Certificate, cas *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	if cas == nil {
		return "", errors.New("no cluster CA to verify the peer against")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         cas,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", fmt.Errorf("peer certificate %q is not from the cluster CA: %w", leaf.Subject.CommonName, err)
	}
	if leaf.Subject.CommonName == "" {
		return "", errors.New("peer certificate has no common name (proxy id)")
	}
	return leaf.Subject.CommonName, nil
}

// PeerID returns the verified peer proxy id (leaf CN) of a gRPC call. It
// reads the chain the server's TLS stack verified, so it answers on the
// server side of a call made over [Identity.ServerTLS] credentials.
func PeerID(ctx context.Context) (string, bool) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	cn := info.State.VerifiedChains[0][0].Subject.CommonName
	return cn, cn != ""
}
