package pki

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
)

// TokenBytes is the entropy of a token made by NewToken: 128 bits.
const TokenBytes = 16

// NewToken returns a new random token: TokenBytes bytes, hex-encoded.
func NewToken() (string, error) {
	b := make([]byte, TokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// JoinTokens reads the join token file again and returns its tokens: one per
// line, surrounding spaces trimmed, with '#' starting a comment that runs to
// the end of the line. An operator may edit the file while a proxy runs; an
// empty file means no agent may join with a static token.
func (a *Authority) JoinTokens() ([]string, error) {
	data, err := readSecret(a.Dir, FileJoinTokens)
	if err != nil {
		return nil, err
	}
	return parseTokens(string(data)), nil
}

func parseTokens(data string) []string {
	var toks []string
	for line := range strings.Lines(data) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if t := strings.TrimSpace(line); t != "" {
			toks = append(toks, t)
		}
	}
	return toks
}

// CheckJoinToken reports whether tok is one of the current join tokens. It
// compares against every token in constant time, so neither the timing nor the
// position of a match tells an attacker anything. A token file that cannot be
// read accepts nothing; the reason is logged.
func (a *Authority) CheckJoinToken(tok string) bool {
	if tok == "" {
		return false
	}
	toks, err := a.JoinTokens()
	if err != nil {
		slog.Warn("cannot read join tokens; refusing the join", "path", filepath.Join(a.Dir, FileJoinTokens), "err", err)
		return false
	}
	return MatchToken(tok, toks...)
}

// APIToken reads the API bearer token file again and returns its token.
func (a *Authority) APIToken() (string, error) {
	data, err := readSecret(a.Dir, FileAPIToken)
	if err != nil {
		return "", err
	}
	path := filepath.Join(a.Dir, FileAPIToken)
	toks := parseTokens(string(data))
	switch len(toks) {
	case 0:
		return "", fmt.Errorf("%s holds no token; put one random token in it (for example the output of `openssl rand -hex 16`)", path)
	case 1:
		return toks[0], nil
	default:
		return "", fmt.Errorf("%s holds more than one token; keep exactly one", path)
	}
}

// CheckAPIToken reports whether tok is the API token, in constant time. A token
// file that cannot be read accepts nothing; the reason is logged.
func (a *Authority) CheckAPIToken(tok string) bool {
	if tok == "" {
		return false
	}
	want, err := a.APIToken()
	if err != nil {
		slog.Warn("cannot read the API token; refusing the request", "path", filepath.Join(a.Dir, FileAPIToken), "err", err)
		return false
	}
	return MatchToken(tok, want)
}

// MatchToken reports whether tok is one of toks. It compares SHA-256
// digests rather than the tokens themselves, so the comparison takes the
// same time whatever the lengths, and visits every token.
func MatchToken(tok string, toks ...string) bool {
	h := sha256.Sum256([]byte(tok))
	match := 0
	for _, t := range toks {
		th := sha256.Sum256([]byte(t))
		match |= subtle.ConstantTimeCompare(h[:], th[:])
	}
	return match == 1
}

// GossipKey returns the gossip encryption key, or nil when the identity has
// no gossip_key file (gossip then runs unencrypted).
func (a *Authority) GossipKey() ([]byte, error) {
	data, err := readSecret(a.Dir, FileGossipKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return DecodeGossipKey(string(data))
}

// DecodeGossipKey decodes a base64 gossip key of 16, 24 or 32 bytes.
func DecodeGossipKey(text string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("gossip key has %d bytes; want 16, 24 or 32 (make one with `head -c32 /dev/urandom | base64`)", len(key))
}

// APITokenMAC is HMAC-SHA256 of msg keyed by the API token: what a proxy
// puts in a value it hands out (its status page's sign-in cookie) so that
// the value proves its holder had the token without holding it, is
// accepted by every proxy of the cluster, and dies when the token is
// replaced. It fails when the token file cannot be read.
func (a *Authority) APITokenMAC(msg []byte) ([]byte, error) {
	tok, err := a.APIToken()
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, []byte("warren api token mac v1\x00"+tok))
	m.Write(msg)
	return m.Sum(nil), nil
}
