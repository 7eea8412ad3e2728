package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/warren-proxy/warren/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// GenerateKey makes a new Ed25519 key pair for a user or a host. It returns a
// signer for it and the private key as an unencrypted OpenSSH PEM block.
func GenerateKey() (ssh.Signer, []byte, error) { return GenerateKeyType(KeyEd25519) }

// Key types GenerateKeyType makes.
const (
	KeyEd25519 = "ed25519"
	// KeyECDSA is ECDSA P-256: for clients that cannot sign with an
	// Ed25519 certificate (libssh2 1.10, and curl on it).
	KeyECDSA = "ecdsa"
)

// GenerateKeyType is GenerateKey for a key type: KeyEd25519 or KeyECDSA.
func GenerateKeyType(typ string) (ssh.Signer, []byte, error) {
	var priv crypto.Signer
	var err error
	switch typ {
	case KeyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case KeyECDSA:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("unknown key type %q: use %s or %s", typ, KeyEd25519, KeyECDSA)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return signer, pem.EncodeToMemory(block), nil
}

// WriteUserFiles writes a key and its certificate in the layout stock OpenSSH
// expects: outDir/NAME (the private key, 0600), outDir/NAME.pub and
// outDir/NAME-cert.pub, which `ssh -i outDir/NAME` loads by itself. outDir is
// created with mode 0700 if it is missing. Existing files are replaced
// atomically, so renewing a certificate never leaves a broken pair. It returns
// the path of the private key.
func WriteUserFiles(outDir, name string, keyPEM []byte, cert *ssh.Certificate) (keyPath string, err error) {
	if err := checkFileName(name); err != nil {
		return "", fmt.Errorf("write user key files: %w", err)
	}
	if cert == nil {
		return "", errors.New("write user key files: no certificate")
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return "", fmt.Errorf("write user key files: parse private key: %w", err)
	}
	if !sameKey(signer.PublicKey(), cert.Key) {
		return "", errors.New("write user key files: the certificate is for another key")
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", fmt.Errorf("write user key files: %w", err)
	}
	comment := cert.KeyId
	if strings.ContainsFunc(comment, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		comment = "" // never break the one-line format
	}
	keyPath = filepath.Join(outDir, name)
	for _, f := range []identityFile{
		{name, keyPEM, 0o600},
		{name + ".pub", authorizedKey(cert.Key, comment), 0o644},
		{name + "-cert.pub", authorizedKey(cert, comment), 0o644},
	} {
		if err := atomicfile.Write(filepath.Join(outDir, f.name), f.data, f.mode); err != nil {
			return "", fmt.Errorf("write user key files: %w", err)
		}
	}
	return keyPath, nil
}

// checkFileName accepts a plain file name that ssh will not read as an option.
func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, "-") ||
		strings.ContainsAny(name, `/\`) || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("key name %q is not a plain file name", name)
	}
	return nil
}

// Names of the known_hosts files WriteKnownHosts writes beside a user's key.
const (
	ProxyKnownHostsFile    = "known_hosts"
	ResourceKnownHostsFile = "known_hosts_resources"
)

// WriteKnownHosts writes the two known_hosts files a user's SSH client
// needs into dir: ProxyKnownHostsFile trusts the proxy host CA, for the
// proxies, and ResourceKnownHostsFile the agent host CA, for resources.
// Kept apart, neither CA is ever trusted for the other's hosts. It returns
// the two paths.
func WriteKnownHosts(dir string, hostCA, agentCA ssh.PublicKey) (proxies, resources string, err error) {
	proxies, resources = filepath.Join(dir, ProxyKnownHostsFile), filepath.Join(dir, ResourceKnownHostsFile)
	for _, f := range []struct {
		path string
		ca   ssh.PublicKey
		what string
	}{{proxies, hostCA, "warren proxy host CA"}, {resources, agentCA, "warren agent host CA"}} {
		line := "@cert-authority * " + strings.TrimSpace(string(authorizedKey(f.ca, f.what))) + "\n"
		if err := atomicfile.Write(f.path, []byte(line), 0o644); err != nil {
			return "", "", fmt.Errorf("write known_hosts: %w", err)
		}
	}
	return proxies, resources, nil
}

// KnownHostsLine returns the known_hosts line with which an OpenSSH client
// trusts every host certificate of hostCA for host names matching pattern
// (empty means "*").
func KnownHostsLine(hostCA ssh.PublicKey, pattern string) string {
	if pattern == "" {
		pattern = "*"
	}
	return "@cert-authority " + pattern + " " + strings.TrimSpace(string(authorizedKey(hostCA, "warren host CA")))
}

// Fingerprint returns the SHA-256 fingerprint of pub ("SHA256:…"), as
// ssh-keygen -l prints it, or "" for nil. Agents pin the cluster CAs by it.
func Fingerprint(pub ssh.PublicKey) string {
	if pub == nil {
		return ""
	}
	return ssh.FingerprintSHA256(pub)
}
