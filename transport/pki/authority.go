package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/atomicfile"
	"github.com/warren-proxy/warren/internal/model"
)

// Certificate extensions that carry Warren's identity of a user.
const (
	ExtUser  = "warren-user@warren.dev"  // the Warren user name
	ExtRoles = "warren-roles@warren.dev" // comma-separated roles
)

// Names of the files of a cluster identity inside its data directory.
const (
	FileUserCA     = "user_ca"
	FileUserCAPub  = "user_ca.pub"
	FileHostCA     = "host_ca"
	FileHostCAPub  = "host_ca.pub"
	FileAgentCA    = "agent_ca"
	FileAgentCAPub = "agent_ca.pub"
	FileTLSCAKey   = "tls_ca.key"
	FileTLSCACert  = "tls_ca.crt"
	FileJoinTokens = "join_tokens"
	FileAPIToken   = "api_token"
	// FileGossipKey holds the key that encrypts the proxies' gossip
	// (base64 of 32 random bytes). It is optional: an identity made before
	// it existed gossips unencrypted until one is added.
	FileGossipKey = "gossip_key"
)

// identityFiles lists every file Init writes, in the order it writes them.
var identityFiles = []string{
	FileUserCA, FileUserCAPub, FileHostCA, FileHostCAPub, FileAgentCA, FileAgentCAPub,
	FileTLSCAKey, FileTLSCACert, FileJoinTokens, FileAPIToken,
}

// DefaultClusterName names a cluster whose InitOptions give no name.
const DefaultClusterName = "warren"

// TLSCAValidity is how long the TLS CA made by Init is valid.
const TLSCAValidity = 10 * 365 * 24 * time.Hour

// ErrIdentityExists is returned (wrapped) by Init when the directory already
// holds a cluster identity.
var ErrIdentityExists = errors.New("cluster identity already exists")

// InitOptions configures Init.
type InitOptions struct {
	// ClusterName appears in the CA key comments and the TLS CA subject.
	// Empty means DefaultClusterName.
	ClusterName string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem with the options at once.
func (o InitOptions) Validate() error {
	var errs []error
	if o.ClusterName != "" {
		errs = append(errs, model.CheckName("cluster name", o.ClusterName))
	}
	return errors.Join(errs...)
}

// Authority is a loaded cluster identity: the CAs that sign user, host and
// TLS certificates, and access to the token files.
type Authority struct {
	// Dir is the data directory the identity lives in.
	Dir string
	// ClusterName is the name given to Init, read back from the TLS CA's
	// subject.
	ClusterName string
	// UserCA signs user certificates.
	UserCA ssh.Signer
	// HostCA signs the host certificates of proxies, and nothing else: an
	// agent or a user trusts it for proxies only.
	HostCA ssh.Signer
	// AgentCA signs the host certificates of agents, and nothing else:
	// users trust it for resources, proxies for agents' tunnels. Keeping
	// the two apart means an agent's certificate can never pass for a
	// proxy, whatever names it holds.
	AgentCA ssh.Signer
	// TLSCert is the self-signed TLS CA certificate; TLSKey is its key.
	TLSCert *x509.Certificate
	TLSKey  crypto.Signer

	// The token files are not held here: they are re-read on every use so
	// that an operator can edit them while a proxy runs.
}

// existsError reports that Init found an identity; its message is the one
// sentence the operator sees.
type existsError struct{ dir string }

func (e *existsError) Error() string {
	return fmt.Sprintf("%s already holds a cluster identity; use another --data-dir or remove it", e.dir)
}

func (e *existsError) Unwrap() error { return ErrIdentityExists }

// Init creates a new cluster identity in dir (created with mode 0700 if
// missing, and tightened to 0700 if it exists): both SSH CAs, the TLS CA, one
// join token and the API token. It refuses to touch a directory that already
// holds any file of an identity. On failure it removes the files it wrote.
func Init(dir string, opts InitOptions) (*Authority, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("init cluster identity: %w", err)
	}
	if dir == "" {
		return nil, errors.New("init cluster identity: no data directory given")
	}
	name := opts.ClusterName
	if name == "" {
		name = DefaultClusterName
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}

	for _, f := range identityFiles {
		_, err := os.Lstat(filepath.Join(dir, f))
		if err == nil {
			return nil, &existsError{dir: dir}
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("init cluster identity: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init cluster identity: create data directory: %w", err)
	}
	// The directory may have existed with a looser mode; it is about to hold
	// the cluster's private keys.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init cluster identity: %w", err)
	}

	files, a, err := newIdentity(dir, name, now())
	if err != nil {
		return nil, fmt.Errorf("init cluster identity: %w", err)
	}
	var written []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := atomicfile.Write(p, f.data, f.mode); err != nil {
			for _, w := range written {
				_ = os.Remove(w) // best effort: leave no half identity behind
			}
			return nil, fmt.Errorf("init cluster identity: %w", err)
		}
		written = append(written, p)
	}
	return a, nil
}

type identityFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// newIdentity generates every key and token in memory so that Init writes
// files only once nothing can fail but the writes themselves.
func newIdentity(dir, cluster string, now time.Time) ([]identityFile, *Authority, error) {
	a := &Authority{Dir: dir, ClusterName: cluster}
	var files []identityFile

	for _, ca := range sshCAs(cluster) {
		signer, caFiles, err := newSSHCA(ca)
		if err != nil {
			return nil, nil, err
		}
		*ca.signer(a) = signer
		files = append(files, caFiles...)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS CA key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode TLS CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkixName(cluster+" TLS CA", cluster),
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(TLSCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create TLS CA certificate: %w", err)
	}
	if a.TLSCert, err = x509.ParseCertificate(certDER); err != nil {
		return nil, nil, fmt.Errorf("parse TLS CA certificate: %w", err)
	}
	a.TLSKey = key
	files = append(files,
		identityFile{FileTLSCAKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		identityFile{FileTLSCACert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644})

	joinTok, err := NewToken()
	if err != nil {
		return nil, nil, err
	}
	apiTok, err := NewToken()
	if err != nil {
		return nil, nil, err
	}
	joinFile := "# Agent join tokens for cluster " + cluster + ": one per line, '#' starts a comment.\n" +
		"# Edits take effect at the next join, without a restart.\n" + joinTok + "\n"
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		return nil, nil, fmt.Errorf("generate gossip key: %w", err)
	}
	files = append(files,
		identityFile{FileJoinTokens, []byte(joinFile), 0o600},
		identityFile{FileAPIToken, []byte(apiTok + "\n"), 0o600},
		identityFile{FileGossipKey, []byte(base64.StdEncoding.EncodeToString(gossipKey) + "\n"), 0o600})
	return files, a, nil
}

// sshCA describes one of the cluster's SSH certificate authorities.
type sshCA struct {
	file, pubFile, comment string
	signer                 func(*Authority) *ssh.Signer
}

func sshCAs(cluster string) []sshCA {
	return []sshCA{
		{FileUserCA, FileUserCAPub, "warren user CA (" + cluster + ")", func(a *Authority) *ssh.Signer { return &a.UserCA }},
		{FileHostCA, FileHostCAPub, "warren proxy host CA (" + cluster + ")", func(a *Authority) *ssh.Signer { return &a.HostCA }},
		{FileAgentCA, FileAgentCAPub, "warren agent host CA (" + cluster + ")", func(a *Authority) *ssh.Signer { return &a.AgentCA }},
	}
}

// newSSHCA makes a new Ed25519 CA key and the two files that hold it.
func newSSHCA(ca sshCA) (ssh.Signer, []identityFile, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", ca.file, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, ca.comment)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s key: %w", ca.file, err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("%s signer: %w", ca.file, err)
	}
	return signer, []identityFile{
		{ca.file, pem.EncodeToMemory(block), 0o600},
		{ca.pubFile, authorizedKey(signer.PublicKey(), ca.comment), 0o644},
	}, nil
}

// ErrNeedsUpgrade is returned (wrapped) by Load for an identity made by an
// older Warren that lacks a file this one needs; Upgrade adds it.
var ErrNeedsUpgrade = errors.New("cluster identity needs an upgrade")

// Upgrade adds to the identity in dir the files that an older Warren did
// not make (the agent CA), and returns their names. Every agent that
// joined before must join again: its certificate came from the host CA,
// which now signs proxies only.
func Upgrade(dir string) ([]string, error) {
	switch {
	case allExist(dir, FileAgentCA, FileAgentCAPub):
		return nil, nil
	case anyExists(dir, FileAgentCA, FileAgentCAPub):
		// Half an agent CA is damage, not age: replacing it would void every
		// agent's certificate.
		return nil, fmt.Errorf("upgrade cluster identity: %s holds only one of %s and %s; restore both from a backup (or remove both to make a new agent CA, after which every agent must join again)",
			dir, FileAgentCA, FileAgentCAPub)
	}
	if _, err := os.Lstat(filepath.Join(dir, FileUserCA)); err != nil {
		return nil, fmt.Errorf("upgrade cluster identity: %s holds no identity to upgrade: %w", dir, err)
	}
	tls, err := readFile(dir, FileTLSCACert)
	if err != nil {
		return nil, fmt.Errorf("upgrade cluster identity: %w", err)
	}
	cluster := DefaultClusterName
	if block, _ := pem.Decode(tls); block != nil {
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && len(c.Subject.Organization) > 0 {
			cluster = c.Subject.Organization[0]
		}
	}
	ca := sshCAs(cluster)[2]
	_, files, err := newSSHCA(ca)
	if err != nil {
		return nil, fmt.Errorf("upgrade cluster identity: %w", err)
	}
	// The public half first: if the private one then fails to be written,
	// the identity is visibly half-made (Load and Upgrade say so) rather
	// than silently without an agent CA.
	var added []string
	for _, f := range []identityFile{files[1], files[0]} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return added, fmt.Errorf("upgrade cluster identity: %w", err)
		}
		added = append(added, f.name)
	}
	return added, nil
}

func anyExists(dir string, files ...string) bool {
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

func allExist(dir string, files ...string) bool {
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// authorizedKey renders pub as one authorized_keys line with a comment.
func authorizedKey(pub ssh.PublicKey, comment string) []byte {
	line := bytes.TrimSpace(ssh.MarshalAuthorizedKey(pub))
	if comment != "" {
		line = append(append(line, ' '), comment...)
	}
	return append(line, '\n')
}

// Load reads the cluster identity in dir, as Init wrote it. Errors name the
// file at fault and say how to fix it; a missing file wraps fs.ErrNotExist.
func Load(dir string) (*Authority, error) {
	a, err := load(dir)
	if err != nil {
		return nil, fmt.Errorf("load cluster identity: %w", err)
	}
	return a, nil
}

func load(dir string) (*Authority, error) {
	a := &Authority{Dir: dir}
	var err error
	if a.UserCA, err = loadSSHCA(dir, FileUserCA, FileUserCAPub); err != nil {
		return nil, err
	}
	if a.HostCA, err = loadSSHCA(dir, FileHostCA, FileHostCAPub); err != nil {
		return nil, err
	}
	if !anyExists(dir, FileAgentCA, FileAgentCAPub) {
		return nil, fmt.Errorf("%w: %s has no %s (agents' certificates now come from their own CA, so that none can pass for a proxy); run `warren init --upgrade --data-dir %s` once, copy the directory to every proxy, and join every agent again",
			ErrNeedsUpgrade, dir, FileAgentCA, dir)
	}
	if a.AgentCA, err = loadSSHCA(dir, FileAgentCA, FileAgentCAPub); err != nil {
		return nil, err
	}
	if a.TLSCert, a.TLSKey, err = loadTLSCA(dir); err != nil {
		return nil, err
	}
	a.ClusterName = DefaultClusterName
	if org := a.TLSCert.Subject.Organization; len(org) > 0 && org[0] != "" {
		a.ClusterName = org[0]
	}
	// Check the token files now, so that a broken identity fails at startup
	// rather than at the first join or API call.
	if _, err := a.JoinTokens(); err != nil {
		return nil, err
	}
	if _, err := a.APIToken(); err != nil {
		return nil, err
	}
	return a, nil
}

func loadSSHCA(dir, file, pubFile string) (ssh.Signer, error) {
	data, err := readSecret(dir, file)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, invalidFile(dir, file, "an unencrypted OpenSSH private key", err)
	}
	pub, err := readPublicKey(dir, pubFile)
	if err != nil {
		return nil, err
	}
	if !sameKey(pub, signer.PublicKey()) {
		return nil, fmt.Errorf("%s does not match %s; restore the pair from a backup, or write the public key again with `ssh-keygen -y -f %s`",
			filepath.Join(dir, pubFile), filepath.Join(dir, file), filepath.Join(dir, file))
	}
	return signer, nil
}

func loadTLSCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	keyPEM, err := readSecret(dir, FileTLSCAKey)
	if err != nil {
		return nil, nil, err
	}
	const keyWant = "a PKCS#8 PEM ECDSA or Ed25519 private key"
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, nil, invalidFile(dir, FileTLSCAKey, keyWant, errors.New("no PRIVATE KEY PEM block"))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, invalidFile(dir, FileTLSCAKey, keyWant, err)
	}
	var key crypto.Signer
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		key = k
	case ed25519.PrivateKey:
		key = k
	default:
		return nil, nil, invalidFile(dir, FileTLSCAKey, keyWant, fmt.Errorf("key type %T is not supported", k))
	}

	certPEM, err := readFile(dir, FileTLSCACert)
	if err != nil {
		return nil, nil, err
	}
	const certWant = "a PEM X.509 CA certificate"
	block, _ = pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, invalidFile(dir, FileTLSCACert, certWant, errors.New("no CERTIFICATE PEM block"))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, invalidFile(dir, FileTLSCACert, certWant, err)
	}
	if !cert.IsCA {
		return nil, nil, invalidFile(dir, FileTLSCACert, certWant, errors.New("the certificate is not a CA"))
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, nil, fmt.Errorf("%s does not match %s; restore the pair from a backup",
			filepath.Join(dir, FileTLSCACert), filepath.Join(dir, FileTLSCAKey))
	}
	return cert, key, nil
}

// LoadPublic reads only the public keys of the SSH CAs from dir: what a
// node or a client needs to trust the cluster.
func LoadPublic(dir string) (userCA, hostCA, agentCA ssh.PublicKey, err error) {
	if userCA, err = readPublicKey(dir, FileUserCAPub); err != nil {
		return nil, nil, nil, fmt.Errorf("load cluster CAs: %w", err)
	}
	if hostCA, err = readPublicKey(dir, FileHostCAPub); err != nil {
		return nil, nil, nil, fmt.Errorf("load cluster CAs: %w", err)
	}
	if agentCA, err = readPublicKey(dir, FileAgentCAPub); err != nil {
		return nil, nil, nil, fmt.Errorf("load cluster CAs: %w", err)
	}
	return userCA, hostCA, agentCA, nil
}

func readPublicKey(dir, file string) (ssh.PublicKey, error) {
	data, err := readFile(dir, file)
	if err != nil {
		return nil, err
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, invalidFile(dir, file, "an OpenSSH public key line", err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, invalidFile(dir, file, "exactly one OpenSSH public key line", errors.New("more than one line"))
	}
	return pub, nil
}

// invalidFile reports a file of the identity that exists but cannot be used.
func invalidFile(dir, file, want string, err error) error {
	return fmt.Errorf("%s is not %s (%w); restore it from a backup (`warren init` in a new --data-dir would make a new cluster identity, and every certificate issued so far would stop working)",
		filepath.Join(dir, file), want, err)
}

// sameKey reports whether two public keys are the same key.
func sameKey(a, b ssh.PublicKey) bool {
	if a == nil || b == nil {
		return false
	}
	return bytes.Equal(a.Marshal(), b.Marshal())
}

// sortedKeys returns the keys of m in order, for stable messages.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
