package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/transport/pki"
)

// put writes one configuration entry through the router, durably.
func (p *Proxy) put(key string, v any) error {
	value, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return p.writeConfig(&router.PutConfig{Key: key, Value: value})
}

// writeConfig sends a configuration write (PutConfig, PutDefinition) to
// the router and waits until it is durable here and sent to the peers.
func (p *Proxy) writeConfig(m any) error {
	res, err := p.system.Root.RequestFuture(p.router, m, 10*time.Second).Result()
	if err != nil {
		return err
	}
	r, ok := res.(*router.ConfigResult)
	if !ok {
		return errors.New("unexpected answer from the router")
	}
	return r.Err
}

// CreateToken makes a join token with req's grant, stores it (hashed) in
// the cluster's configuration with this proxy as its origin, and returns
// its secret, which is never stored.
func (p *Proxy) CreateToken(req access.TokenRequest, createdBy string) (string, access.Token, error) {
	req, err := req.Validate()
	if err != nil {
		return "", access.Token{}, err
	}
	secret, err := pki.NewToken()
	if err != nil {
		return "", access.Token{}, err
	}
	now := p.cfg.Clock()
	t := access.Token{
		ID: access.TokenID(secret), Hash: access.HashToken(secret), Created: now, Expires: now.Add(req.TTL),
		Uses: req.Uses, Origin: p.cfg.ID, RenewFor: req.RenewFor, CreatedBy: createdBy,
		Grant: access.Grant{Names: req.Resources, Labels: req.Labels},
	}
	if err := p.put(router.PrefixToken+t.ID, t); err != nil {
		return "", access.Token{}, fmt.Errorf("store the token: %w", err)
	}
	return secret, t, nil
}
