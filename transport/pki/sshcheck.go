package pki

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// CheckUserCert verifies that pub is a user certificate signed by one of
// userCAs, valid at now (zero means time.Now()), with at least one principal
// and no critical option: Warren issues none and enforces none, so a
// certificate that demands one is refused rather than half obeyed. Whether a
// principal (login) is allowed is left to the caller. The errors are fit to
// show the user as they are.
func CheckUserCert(userCAs []ssh.PublicKey, pub ssh.PublicKey, now time.Time) (*ssh.Certificate, error) {
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("key is not a certificate: log in with a certificate from `warren user add`")
	}
	if cert.CertType != ssh.UserCert {
		return nil, errors.New("certificate is a host certificate, not a user certificate")
	}
	i := slices.IndexFunc(userCAs, func(ca ssh.PublicKey) bool { return sameKey(ca, cert.SignatureKey) })
	if i < 0 {
		return nil, errors.New("certificate is not signed by the cluster user CA")
	}
	if err := checkCert(userCAs[i], cert, now); err != nil {
		return nil, err
	}
	if len(cert.ValidPrincipals) == 0 {
		// OpenSSH reads no principals as "any login"; Warren never issues
		// such a certificate and does not accept one.
		return nil, errors.New("certificate names no logins (principals)")
	}
	return cert, nil
}

// CheckHostCert verifies that pub is a host certificate signed by hostCA,
// valid at now (zero means time.Now()), without critical options, and, when
// principal is not empty, valid for that principal.
func CheckHostCert(hostCA ssh.PublicKey, pub ssh.PublicKey, principal string, now time.Time) (*ssh.Certificate, error) {
	return checkHostCert(hostCA, "host CA", pub, principal, now)
}

// checkHostCert is CheckHostCert with the CA's name for messages.
func checkHostCert(hostCA ssh.PublicKey, caName string, pub ssh.PublicKey, principal string, now time.Time) (*ssh.Certificate, error) {
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("host key is not a certificate: the host has not joined the cluster")
	}
	if cert.CertType != ssh.HostCert {
		return nil, errors.New("certificate is a user certificate, not a host certificate")
	}
	if !sameKey(hostCA, cert.SignatureKey) {
		return nil, fmt.Errorf("certificate is not signed by the cluster %s", caName)
	}
	if err := checkCert(hostCA, cert, now); err != nil {
		return nil, err
	}
	if principal != "" && !slices.Contains(cert.ValidPrincipals, principal) {
		return nil, fmt.Errorf("certificate is valid for %s, not for %q", quoteAll(cert.ValidPrincipals), principal)
	}
	return cert, nil
}

// checkCert verifies the signature of cert by ca, its validity at now and
// that it has no critical options.
func checkCert(ca ssh.PublicKey, cert *ssh.Certificate, now time.Time) error {
	// The signed bytes are the certificate without its signature, as
	// ssh.Certificate.bytesForSigning computes them.
	if cert.Key == nil || cert.Signature == nil {
		return errors.New("certificate signature is invalid")
	}
	unsigned := *cert
	unsigned.Signature = nil
	data := unsigned.Marshal()
	data = data[:len(data)-4] // drop the empty signature's length
	if ca.Verify(data, cert.Signature) != nil {
		return errors.New("certificate signature is invalid")
	}

	if now.IsZero() {
		now = time.Now()
	}
	t := now.Unix()
	if after := cert.ValidAfter; after > math.MaxInt64 || t < int64(after) {
		return fmt.Errorf("certificate is not valid before %s", certTime(after))
	}
	if before := cert.ValidBefore; before != ssh.CertTimeInfinity && before <= math.MaxInt64 && t >= int64(before) {
		return fmt.Errorf("certificate expired at %s", certTime(before))
	}
	if len(cert.CriticalOptions) > 0 {
		return fmt.Errorf("certificate has critical options %s, which Warren does not enforce", strings.Join(sortedKeys(cert.CriticalOptions), ", "))
	}
	return nil
}

// certTime formats a certificate time in UTC, RFC 3339.
func certTime(s uint64) string {
	if s > math.MaxInt64 {
		return "the end of time"
	}
	return time.Unix(int64(s), 0).UTC().Format(time.RFC3339)
}
