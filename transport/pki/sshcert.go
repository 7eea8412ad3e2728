package pki

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
)

// ClockSkew is how far before "now" a certificate becomes valid, so that a
// verifier whose clock runs a little behind the issuer's accepts it.
const ClockSkew = time.Minute

// Longest lifetimes of issued certificates. A user certificate is a
// credential nobody can revoke but by a lock: it is short (roles may
// shorten it further with max_cert_ttl).
const (
	MaxUserCertTTL = 30 * 24 * time.Hour
	MaxHostCertTTL = 365 * 24 * time.Hour
)

// userPermissions are the OpenSSH extensions every user certificate carries:
// what `ssh-keygen -s` grants by default. Access control is Warren's job, at
// the entry proxy and again at the node.
var userPermissions = []string{
	"permit-X11-forwarding",
	"permit-agent-forwarding",
	"permit-port-forwarding",
	"permit-pty",
	"permit-user-rc",
}

var (
	userNameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,255}$`)
	// loginRE accepts the portable POSIX user names plus a trailing '$'
	// (Samba machine accounts), as useradd does; 32 is the utmp limit.
	loginRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9._-]{0,30}\$?$`)
	roleRE  = regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,128}$`)
)

// UserCertRequest asks for a user certificate.
type UserCertRequest struct {
	// User is the Warren user name: KeyId and the ExtUser extension.
	User string
	// Logins are the unix accounts the certificate is valid for: its
	// principals. At least one is required.
	Logins []string
	// Roles go into the ExtRoles extension.
	Roles []string
	// TTL is the lifetime, at most MaxUserCertTTL.
	TTL time.Duration
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Validate reports every problem with the request at once.
func (r UserCertRequest) Validate() error {
	var errs []error
	switch {
	case r.User == "":
		errs = append(errs, errors.New("user name is empty"))
	case !userNameRE.MatchString(r.User):
		errs = append(errs, fmt.Errorf("user name %q is not valid: use up to 255 letters, digits, '.', '_', '@' or '-'", r.User))
	}
	if len(r.Logins) == 0 {
		errs = append(errs, errors.New("no logins: give at least one unix account the certificate is valid for"))
	}
	for _, l := range r.Logins {
		if !loginRE.MatchString(l) {
			errs = append(errs, fmt.Errorf("login %q is not a valid unix user name", l))
		}
	}
	for _, role := range r.Roles {
		if !roleRE.MatchString(role) {
			errs = append(errs, fmt.Errorf("role %q is not valid: use up to 128 letters, digits, '.', '_', ':', '@' or '-'", role))
		}
	}
	errs = append(errs, checkTTL(r.TTL, MaxUserCertTTL))
	return errors.Join(errs...)
}

// HostCertRequest asks for a host certificate.
type HostCertRequest struct {
	// ID identifies the host (an agent id): KeyId and the first principal.
	ID string
	// Principals are more names the host is known by (host names, addresses).
	Principals []string
	// TTL is the lifetime, at most MaxHostCertTTL.
	TTL time.Duration
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Validate reports every problem with the request at once.
func (r HostCertRequest) Validate() error {
	var errs []error
	switch {
	case r.ID == "":
		errs = append(errs, errors.New("host id is empty"))
	default:
		// Host certificates are the proxies': the id is a proxy id.
		errs = append(errs, model.CheckName("host id", r.ID))
	}
	for _, p := range r.Principals {
		if p == "" || strings.ContainsFunc(p, func(c rune) bool {
			return c == ',' || unicode.IsSpace(c) || !unicode.IsPrint(c)
		}) {
			errs = append(errs, fmt.Errorf("principal %q is not valid: it must be non-empty, without spaces or commas", p))
		}
	}
	errs = append(errs, checkTTL(r.TTL, MaxHostCertTTL))
	return errors.Join(errs...)
}

func checkTTL(ttl, max time.Duration) error {
	switch {
	case ttl <= 0:
		return fmt.Errorf("TTL %s is not positive", ttl)
	case ttl > max:
		return fmt.Errorf("TTL %s is longer than the maximum of %s", ttl, max)
	}
	return nil
}

// checkSubjectKey reports a key that cannot be certified.
func checkSubjectKey(pub ssh.PublicKey) error {
	switch pub.(type) {
	case nil:
		return errors.New("no public key to certify")
	case *ssh.Certificate:
		return errors.New("the key to certify is already a certificate; give the plain public key")
	}
	return nil
}

// IssueUserCert signs a user certificate for pub with the user CA. The
// certificate is valid from req.Now-ClockSkew to req.Now+req.TTL for the
// logins of the request (deduplicated), with the usual OpenSSH permissions
// and Warren's identity extensions.
func (a *Authority) IssueUserCert(pub ssh.PublicKey, req UserCertRequest) (*ssh.Certificate, error) {
	if err := errors.Join(checkSubjectKey(pub), req.Validate()); err != nil {
		return nil, fmt.Errorf("issue user certificate: %w", err)
	}
	if a == nil || a.UserCA == nil {
		return nil, errors.New("issue user certificate: no user CA loaded")
	}
	ext := map[string]string{
		ExtUser:  req.User,
		ExtRoles: strings.Join(dedup(req.Roles), ","),
	}
	for _, p := range userPermissions {
		ext[p] = ""
	}
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.UserCert,
		KeyId:           req.User,
		ValidPrincipals: dedup(req.Logins),
		Permissions:     ssh.Permissions{Extensions: ext},
	}
	if err := sign(cert, a.UserCA, req.Now, req.TTL, time.Time{}); err != nil {
		return nil, fmt.Errorf("issue user certificate for %s: %w", req.User, err)
	}
	return cert, nil
}

// IssueHostCert signs a host certificate for pub with the host CA, valid for
// req.ID and req.Principals (deduplicated) from req.Now-ClockSkew to
// req.Now+req.TTL.
func (a *Authority) IssueHostCert(pub ssh.PublicKey, req HostCertRequest) (*ssh.Certificate, error) {
	if err := errors.Join(checkSubjectKey(pub), req.Validate()); err != nil {
		return nil, fmt.Errorf("issue host certificate: %w", err)
	}
	if a == nil || a.HostCA == nil {
		return nil, errors.New("issue host certificate: no host CA loaded")
	}
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.HostCert,
		KeyId:           req.ID,
		ValidPrincipals: dedup(append([]string{req.ID}, req.Principals...)),
	}
	if err := sign(cert, a.HostCA, req.Now, req.TTL, time.Time{}); err != nil {
		return nil, fmt.Errorf("issue host certificate for %s: %w", req.ID, err)
	}
	return cert, nil
}

// ExtAgentGrant is the extension of an agent's host certificate that
// carries its grant: what the join token allowed it to serve. Its value is
// opaque here (JSON written by the proxy); the certificate's signature is
// what makes it trustworthy, so any proxy can check an agent's heartbeats
// without asking another.
const ExtAgentGrant = "warren-grant@warren.dev"

// AnyProxyPrincipal is a principal of every proxy's host certificate: the
// name ssh checks (HostKeyAlias) for an entry that may reach any proxy of
// the cluster (`warren connect` picks one per connection). Every proxy
// is equally trusted by a user, so a name they share adds no trust; the
// '/' keeps it apart from every host and resource name.
const AnyProxyPrincipal = "proxy/any"

// AgentPrincipal is the principal that names agent id in its certificate.
// The '/' makes it something no resource or host name can be, so the
// agent's own id never doubles as a host name a user might dial.
func AgentPrincipal(id string) string { return "agent/" + id }

// AgentCertRequest asks for an agent's host certificate.
type AgentCertRequest struct {
	// ID is the agent id: KeyId, and AgentPrincipal(ID) the first principal.
	ID string
	// Names are the resource names the agent may be reached as (its ssh
	// resources): more principals. Each must be a valid resource name.
	Names []string
	// Grant is the ExtAgentGrant value (may be empty).
	Grant string
	// TTL is the lifetime, at most MaxHostCertTTL; NotAfter, if set, ends
	// the certificate sooner (an agent's renewal grant).
	TTL      time.Duration
	NotAfter time.Time
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Validate reports every problem with the request at once.
func (r AgentCertRequest) Validate() error {
	errs := []error{model.CheckName("agent id", r.ID)}
	for _, n := range r.Names {
		errs = append(errs, model.CheckName("resource name", n))
	}
	errs = append(errs, checkTTL(r.TTL, MaxHostCertTTL))
	if now := r.Now; !r.NotAfter.IsZero() {
		if now.IsZero() {
			now = time.Now()
		}
		if !r.NotAfter.After(now) {
			errs = append(errs, fmt.Errorf("the agent's renewal grant ended at %s; it must join again with a new token", r.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	return errors.Join(errs...)
}

// IssueAgentCert signs an agent's host certificate with the agent CA: valid
// for AgentPrincipal(req.ID) and req.Names, carrying req.Grant, from
// req.Now-ClockSkew for req.TTL but not past req.NotAfter.
func (a *Authority) IssueAgentCert(pub ssh.PublicKey, req AgentCertRequest) (*ssh.Certificate, error) {
	if err := errors.Join(checkSubjectKey(pub), req.Validate()); err != nil {
		return nil, fmt.Errorf("issue agent certificate: %w", err)
	}
	if a == nil || a.AgentCA == nil {
		return nil, errors.New("issue agent certificate: no agent CA loaded")
	}
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.HostCert,
		KeyId:           req.ID,
		ValidPrincipals: dedup(append([]string{AgentPrincipal(req.ID)}, req.Names...)),
	}
	if req.Grant != "" {
		cert.Permissions.Extensions = map[string]string{ExtAgentGrant: req.Grant}
	}
	if err := sign(cert, a.AgentCA, req.Now, req.TTL, req.NotAfter); err != nil {
		return nil, fmt.Errorf("issue agent certificate for %s: %w", req.ID, err)
	}
	return cert, nil
}

// CheckAgentCert verifies that key is an agent's host certificate from
// agentCA, valid at now, for agent id (its KeyId and its agent principal).
func CheckAgentCert(agentCA, key ssh.PublicKey, id string, now time.Time) (*ssh.Certificate, error) {
	cert, err := CheckHostCert(key, CertOptions{Authorities: []ssh.PublicKey{agentCA}, AuthorityName: "agent CA", Now: now, Principal: AgentPrincipal(id)})
	if err != nil {
		return nil, fmt.Errorf("agent certificate: %w", err)
	}
	if cert.KeyId != id {
		return nil, fmt.Errorf("agent certificate is for agent %s, not %s", model.Quote(cert.KeyId), model.Quote(id))
	}
	return cert, nil
}

// sign sets the serial and validity of cert and signs it with ca: valid
// from now-ClockSkew for ttl, but not past notAfter when that is set.
func sign(cert *ssh.Certificate, ca ssh.Signer, now time.Time, ttl time.Duration, notAfter time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return fmt.Errorf("generate serial: %w", err)
	}
	cert.Serial = binary.BigEndian.Uint64(serial[:])
	cert.ValidAfter = unixSeconds(now.Add(-ClockSkew))
	cert.ValidBefore = unixSeconds(now.Add(ttl))
	if !notAfter.IsZero() && cert.ValidBefore > unixSeconds(notAfter) {
		cert.ValidBefore = unixSeconds(notAfter)
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	return nil
}

func unixSeconds(t time.Time) uint64 {
	if s := t.Unix(); s > 0 {
		return uint64(s)
	}
	return 0
}

// dedup returns ss without repeats, in first-seen order.
func dedup(ss []string) []string {
	out := make([]string, 0, len(ss))
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// UserFromCert returns the Warren user name and roles a user certificate
// carries: from the ExtUser and ExtRoles extensions, the user falling back to
// the KeyId for certificates issued without them.
func UserFromCert(c *ssh.Certificate) (user string, roles []string) {
	if c == nil {
		return "", nil
	}
	user = c.Extensions[ExtUser]
	if user == "" {
		user = c.KeyId
	}
	for r := range strings.SplitSeq(c.Extensions[ExtRoles], ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	return user, roles
}
