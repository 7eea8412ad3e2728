package pki

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
)

// CertOptions is what a caller of CheckUserCert or CheckHostCert knows
// about the certificate it is shown. Everything else (the type, the
// signature, the validity window, the key types, the critical options a
// caller does not enforce) is the same rule for every server and client.
type CertOptions struct {
	// Authorities are the trusted CAs: the certificate must be signed by
	// one of them. An authority that is itself a certificate is never
	// trusted.
	Authorities []ssh.PublicKey
	// AuthorityName names the CAs in messages, e.g. "agent CA"; default
	// "user CA" or "host CA".
	AuthorityName string
	// Now is the time of the check; zero means time.Now(). There is no
	// further allowance for clock skew: issuance already starts every
	// certificate ClockSkew in the past, and expiry is never stretched.
	Now time.Time
	// Principal, when not empty, must be one of the certificate's
	// principals (the login for a user certificate, the host name for a
	// host certificate).
	Principal string
	// CriticalOptions are the critical options the caller enforces itself
	// (e.g. "force-command" on a node). Any other critical option is
	// refused rather than half obeyed, but source-address on a user
	// certificate, which the check enforces (see ClientAddr).
	CriticalOptions []string
	// ClientAddr is the address of the client that presented a user
	// certificate, when the caller is a server that knows it. A
	// source-address critical option is checked against it; without it a
	// certificate with a source-address is refused.
	ClientAddr net.Addr
}

// Kinds of certificate refusal. A refusal is a *CertError whose message is
// fit to show to the user as it is; errors.Is tells its kind.
var (
	ErrNotCertificate   = errors.New("not a certificate")
	ErrCertType         = errors.New("wrong certificate type")
	ErrUnknownAuthority = errors.New("not signed by a trusted CA")
	ErrBadSignature     = errors.New("bad certificate signature")
	ErrKeyType          = errors.New("key type not accepted")
	ErrNotYetValid      = errors.New("certificate not yet valid")
	ErrExpired          = errors.New("certificate expired")
	ErrCriticalOption   = errors.New("critical option not enforced")
	ErrSourceAddress    = errors.New("client address not allowed")
	ErrNoPrincipals     = errors.New("certificate names no principals")
	ErrPrincipal        = errors.New("principal not in certificate")
)

// CertError is a refusal by CheckUserCert or CheckHostCert.
type CertError struct {
	Kind error // one of the Err* kinds above
	Msg  string
}

func (e *CertError) Error() string { return e.Msg }
func (e *CertError) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) error {
	return &CertError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// sourceAddressOption is the OpenSSH critical option that restricts the
// client addresses a user certificate may be used from.
const sourceAddressOption = "source-address"

// MinRSABits is the smallest RSA key accepted, as a certified key or as a
// CA. Warren makes Ed25519 and ECDSA keys only; DSA keys are never accepted.
const MinRSABits = 2048

// CheckUserCert is the one check of a user certificate, for every server
// that takes one: pub must be a user certificate signed by one of
// opts.Authorities, valid at opts.Now, naming at least one principal (and
// opts.Principal when set), with keys of an accepted type, and with no
// critical option but those the caller enforces and a source-address that
// admits opts.ClientAddr. Warren issues no critical options; OpenSSH reads
// no principals as "any login", which Warren never issues nor accepts.
func CheckUserCert(pub ssh.PublicKey, opts CertOptions) (*ssh.Certificate, error) {
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, refuse(ErrNotCertificate, "key is not a certificate: log in with a certificate from `warren user add`")
	}
	if cert.CertType != ssh.UserCert {
		return nil, refuse(ErrCertType, "certificate is a host certificate, not a user certificate")
	}
	if opts.AuthorityName == "" {
		opts.AuthorityName = "user CA"
	}
	if err := checkCert(cert, opts); err != nil {
		return nil, err
	}
	if list, ok := cert.CriticalOptions[sourceAddressOption]; ok {
		if err := checkSourceAddress(list, opts.ClientAddr); err != nil {
			return nil, err
		}
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, refuse(ErrNoPrincipals, "certificate names no logins (principals)")
	}
	if opts.Principal != "" && !slices.Contains(cert.ValidPrincipals, opts.Principal) {
		return nil, refuse(ErrPrincipal, "certificate does not allow login %s; its logins: %s", model.Quote(opts.Principal), strings.Join(cert.ValidPrincipals, ", "))
	}
	return cert, nil
}

// CheckHostCert is the one check of a host certificate, for every client
// that is shown one: pub must be a host certificate signed by one of
// opts.Authorities, valid at opts.Now, with keys of an accepted type and
// no critical option (OpenSSH defines none for hosts), naming at least one
// principal and opts.Principal when set.
func CheckHostCert(pub ssh.PublicKey, opts CertOptions) (*ssh.Certificate, error) {
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, refuse(ErrNotCertificate, "host key is not a certificate: the host has not joined the cluster")
	}
	if cert.CertType != ssh.HostCert {
		return nil, refuse(ErrCertType, "certificate is a user certificate, not a host certificate")
	}
	if opts.AuthorityName == "" {
		opts.AuthorityName = "host CA"
	}
	opts.ClientAddr = nil // source-address means nothing on a host
	if err := checkCert(cert, opts); err != nil {
		return nil, err
	}
	if len(cert.ValidPrincipals) == 0 {
		return nil, refuse(ErrNoPrincipals, "host certificate names no hosts (principals)")
	}
	if opts.Principal != "" && !slices.Contains(cert.ValidPrincipals, opts.Principal) {
		return nil, refuse(ErrPrincipal, "certificate is valid for %s, not for %q", quoteAll(cert.ValidPrincipals), opts.Principal)
	}
	return cert, nil
}

// HostKeyCallback checks the host certificates an SSH client is shown with
// CheckHostCert, for the host it dialed (the host part of the address) and
// authorities; clock nil means time.Now. Plain host keys go to fallback,
// or are refused when it is nil.
func HostKeyCallback(authorities []ssh.PublicKey, clock func() time.Time, fallback ssh.HostKeyCallback) ssh.HostKeyCallback {
	authorities = slices.Clone(authorities)
	if clock == nil {
		clock = time.Now
	}
	return func(addr string, remote net.Addr, key ssh.PublicKey) error {
		if _, ok := key.(*ssh.Certificate); !ok {
			if fallback == nil {
				return fmt.Errorf("%s: host key is not a certificate from the cluster CA", addr)
			}
			return fallback(addr, remote, key)
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		if _, err := CheckHostCert(key, CertOptions{Authorities: authorities, Now: clock(), Principal: host}); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		return nil
	}
}

// checkCert is what user and host certificates share: the authority, the
// signature, the key types, the validity window and the critical options
// (source-address aside, which only user certificates may carry).
func checkCert(cert *ssh.Certificate, opts CertOptions) error {
	if _, isCert := cert.SignatureKey.(*ssh.Certificate); isCert {
		return refuse(ErrUnknownAuthority, "certificate is signed by another certificate, not by the cluster %s", opts.AuthorityName)
	}
	i := slices.IndexFunc(opts.Authorities, func(ca ssh.PublicKey) bool {
		_, caIsCert := ca.(*ssh.Certificate)
		return !caIsCert && sameKey(ca, cert.SignatureKey)
	})
	if i < 0 {
		return refuse(ErrUnknownAuthority, "certificate is not signed by the cluster %s", opts.AuthorityName)
	}
	ca := opts.Authorities[i]
	// The signed bytes are the certificate without its signature, as
	// ssh.Certificate.bytesForSigning computes them.
	if cert.Key == nil || cert.Signature == nil {
		return refuse(ErrBadSignature, "certificate signature is invalid")
	}
	unsigned := *cert
	unsigned.Signature = nil
	data := unsigned.Marshal()
	data = data[:len(data)-4] // drop the empty signature's length
	if ca.Verify(data, cert.Signature) != nil {
		return refuse(ErrBadSignature, "certificate signature is invalid")
	}
	if err := checkKeyType("certified key", cert.Key); err != nil {
		return err
	}
	if err := checkKeyType("CA key", ca); err != nil {
		return err
	}
	if err := CheckValidity(cert, opts.Now); err != nil {
		return err
	}
	var unknown []string
	for _, o := range sortedKeys(cert.CriticalOptions) {
		if o == sourceAddressOption && cert.CertType == ssh.UserCert || slices.Contains(opts.CriticalOptions, o) {
			continue // CheckUserCert checks source-address itself
		}
		unknown = append(unknown, o)
	}
	if len(unknown) > 0 {
		return refuse(ErrCriticalOption, "certificate has critical options %s, which Warren does not enforce", strings.Join(unknown, ", "))
	}
	return nil
}

// CheckValidity reports whether cert is valid at now (zero means
// time.Now()): from ValidAfter to before ValidBefore. A bound past what a
// signed 64-bit time holds, but "forever", is invalid. It is the validity
// rule of CheckUserCert and CheckHostCert, for a client that checks its own
// certificate before it offers it.
func CheckValidity(cert *ssh.Certificate, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	t := now.Unix()
	if after := cert.ValidAfter; after > math.MaxInt64 || t < int64(after) {
		return refuse(ErrNotYetValid, "certificate is not valid before %s", certTime(after))
	}
	if before := cert.ValidBefore; before != ssh.CertTimeInfinity && (before > math.MaxInt64 || t >= int64(before)) {
		return refuse(ErrExpired, "certificate expired at %s", certTime(before))
	}
	return nil
}

// CertTTL is the lifetime cert was issued for, as the issuer asked for it
// (without the ClockSkew it starts early), or 0 for one without end.
func CertTTL(cert *ssh.Certificate) time.Duration {
	if cert == nil || cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidBefore <= cert.ValidAfter {
		return 0
	}
	return time.Duration(cert.ValidBefore-cert.ValidAfter)*time.Second - ClockSkew
}

// checkKeyType refuses keys Warren does not accept: DSA, RSA shorter than
// MinRSABits, and certificates where a plain key belongs.
func checkKeyType(what string, k ssh.PublicKey) error {
	switch k.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		return nil
	case ssh.KeyAlgoRSA:
		if ck, ok := k.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() >= MinRSABits {
				return nil
			}
		}
		return refuse(ErrKeyType, "certificate's %s is an RSA key shorter than %d bits", what, MinRSABits)
	}
	return refuse(ErrKeyType, "certificate's %s is of type %s, which Warren does not accept: use Ed25519 or ECDSA", what, k.Type())
}

// checkSourceAddress checks addr against a source-address list: IP
// addresses and CIDR ranges, separated by commas.
func checkSourceAddress(list string, addr net.Addr) error {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || ta == nil {
		return refuse(ErrSourceAddress, "certificate may be used only from %s, and the client's address is unknown here", list)
	}
	ip := ta.IP
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if allowed := net.ParseIP(s); allowed != nil {
			if allowed.Equal(ip) {
				return nil
			}
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return refuse(ErrSourceAddress, "certificate has a malformed source-address %q", s)
		}
		if n.Contains(ip) {
			return nil
		}
	}
	return refuse(ErrSourceAddress, "certificate may be used only from %s, not from %s", list, ip)
}

// certTime formats a certificate time in UTC, RFC 3339.
func certTime(s uint64) string {
	if s > math.MaxInt64 {
		return "the end of time"
	}
	return time.Unix(int64(s), 0).UTC().Format(time.RFC3339)
}
