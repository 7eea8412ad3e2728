package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/storage/identity"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

func (a *Agent) joinToken() (string, error) {
	if a.cfg.JoinTokenFile != "" {
		return readTokenFile("join_token_file", a.cfg.JoinTokenFile, "from `warren token add`")
	}
	if a.cfg.JoinToken == "" {
		return "", errors.New("this agent has not joined yet and its config has no join_token: add one from the cluster's join_tokens file")
	}
	return a.cfg.JoinToken, nil
}

// readTokenFile reads a token (the join token, the debug listener's) from
// the file the config's field names, which only its owner may read, as the
// proxy's own token files: a token others can read is a token others can
// use. Comment lines ('#') and blank lines are skipped; the file must hold
// exactly one token; from says where a token comes from.
func readTokenFile(field, path, from string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", field, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read %s: %w", field, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s %s has mode %04o; run chmod 600 %s so that only its owner can read it", field, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", field, err)
	}
	var toks []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			toks = append(toks, line)
		}
	}
	if len(toks) != 1 {
		return "", fmt.Errorf("%s %s holds %d tokens; put exactly one token in it (%s)", field, path, len(toks), from)
	}
	return toks[0], nil
}

// join obtains an identity through the first proxy that answers.
func (a *Agent) join(ctx context.Context) (identity.Identity, error) {
	token, err := a.joinToken()
	if err != nil {
		return identity.Identity{}, err
	}
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return identity.Identity{}, err
	}
	hostname, _ := os.Hostname()
	req := revtunnel.JoinRequest{
		Name:       a.cfg.Name,
		Hostname:   hostname,
		PublicKey:  string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
		Principals: a.principals(),
	}
	// Proxies may start after their agents (a boot order, a rolling
	// restart): keep trying every proxy with backoff. Only a refused
	// token is final.
	for attempt := 0; ; attempt++ {
		var errs []error
		for _, addr := range a.cfg.Proxies {
			id, err := a.joinVia(ctx, addr, token, req, keyPEM)
			if err == nil {
				return id, nil
			}
			if errors.Is(err, revtunnel.ErrJoinRefused) || errors.Is(err, errSave) {
				return identity.Identity{}, err
			}
			errs = append(errs, err)
		}
		wait := backoff(a.cfg.ReconnectMin, a.cfg.ReconnectMax, attempt)
		a.log.Warn("join failed; retrying", "in", wait.Round(time.Millisecond), "err", errors.Join(errs...))
		if !sleep(ctx, wait) {
			return identity.Identity{}, fmt.Errorf("join: no proxy answered: %w", errors.Join(errs...))
		}
	}
}

func (a *Agent) joinVia(ctx context.Context, addr, token string, req revtunnel.JoinRequest, keyPEM []byte) (identity.Identity, error) {
	jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	resp, ca, err := revtunnel.Join(jctx, addr, token, req, revtunnel.Trust{Pin: a.cfg.CAPin, Clock: a.cfg.Clock})
	cancel()
	if err != nil {
		return identity.Identity{}, err
	}
	if a.cfg.CAPin == "" {
		a.log.Warn("joined without ca_pin: trusting the host CA of the first proxy", "ca", ssh.FingerprintSHA256(ca))
	}
	if len(resp.Refused) > 0 {
		a.log.Error("the cluster did not grant some of this agent's names", "refused", describeRefused(resp.Refused))
	}
	now := a.cfg.Clock()
	id := identity.Identity{
		AgentID:    resp.AgentID,
		PrivateKey: keyPEM,
		HostCert:   []byte(resp.HostCert),
		HostCA:     ssh.MarshalAuthorizedKey(ca),
		UserCA:     []byte(resp.UserCA),
		Proxies:    a.cfg.Proxies,
		JoinedAt:   now,
		UpdatedAt:  now,
	}
	if err := a.store.Save(id); err != nil {
		return identity.Identity{}, fmt.Errorf("%w: %w", errSave, err)
	}
	a.log.Info("joined the cluster", "agent", id.AgentID, "via", addr)
	return id, nil
}

func (a *Agent) useIdentity(id identity.Identity) error {
	key, err := ssh.ParsePrivateKey(id.PrivateKey)
	if err != nil {
		return fmt.Errorf("identity: parse private key: %w", err)
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey(id.HostCA)
	if err != nil {
		return fmt.Errorf("identity: parse host CA: %w", err)
	}
	a.id, a.key, a.hostCA = id, key, ca
	a.signer = &renewableSigner{key: key}
	if err := a.signer.renew(id.HostCert, pki.AgentPrincipal(id.AgentID), a.cfg.Clock()); err != nil {
		return err
	}
	// A second, ECDSA host key for SSH clients that take no Ed25519 keys;
	// made once, kept with the identity.
	if len(id.ECDSAKey) == 0 {
		_, pemBytes, err := pki.GenerateKeyType(pki.KeyECDSA)
		if err != nil {
			return err
		}
		a.id.ECDSAKey = pemBytes
		if err := a.store.Save(a.id); err != nil {
			return fmt.Errorf("save the ECDSA host key: %w", err)
		}
	}
	if a.ecdsaKey, err = ssh.ParsePrivateKey(a.id.ECDSAKey); err != nil {
		return fmt.Errorf("identity: parse ECDSA host key: %w", err)
	}
	return nil
}

var errSave = errors.New("save identity")
