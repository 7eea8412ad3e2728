package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
)

// Grant is what an agent may serve: fixed when it joins, from its join
// token, and carried in its certificate so that every proxy can check it.
//
// A scoped grant (Names set) serves the names its globs match, whether or
// not other agents serve them too: that is how an agent joins a pool. An
// unscoped grant (a token without --resources, or a static token) serves
// only names that no other agent had claimed, and claims them: the first
// agent to serve a name through an unscoped grant keeps it.
type Grant struct {
	// Token is the id of the token the agent joined with.
	Token string `json:"token,omitempty"`
	// Names are name globs ("web-*"); empty means unscoped.
	Names []string `json:"names,omitempty"`
	// Labels, if set, are stamped on every resource the agent serves; a
	// resource that claims another value for one of them is refused.
	Labels map[string]string `json:"labels,omitempty"`
	// RenewUntil is when the agent's certificate stops being renewed: the
	// agent must join again with a new token after it.
	RenewUntil time.Time `json:"renew_until,omitzero"`
}

// Scoped reports whether the grant names its resources.
func (g Grant) Scoped() bool { return len(g.Names) > 0 }

// Encode renders g for a certificate extension.
func (g Grant) Encode() string {
	b, _ := json.Marshal(g) // strings, a map and a time: cannot fail
	return string(b)
}

// MaxGrantBytes bounds a grant in a certificate.
const MaxGrantBytes = 8 << 10

// DecodeGrant reads a grant from a certificate extension and checks it.
func DecodeGrant(s string) (Grant, error) {
	if len(s) > MaxGrantBytes {
		return Grant{}, fmt.Errorf("grant of %d bytes exceeds %d", len(s), MaxGrantBytes)
	}
	var g Grant
	if err := json.Unmarshal([]byte(s), &g); err != nil {
		return Grant{}, fmt.Errorf("decode grant: %w", err)
	}
	return g, g.Validate()
}

// Validate reports every problem with g at once.
func (g Grant) Validate() error {
	var errs []error
	if g.Token != "" && !ValidTokenID(g.Token) {
		errs = append(errs, fmt.Errorf("token id %s is not valid", model.Quote(g.Token)))
	}
	if len(g.Names) > 64 {
		errs = append(errs, fmt.Errorf("%d name globs; at most 64", len(g.Names)))
	}
	for _, n := range g.Names {
		if !model.ValidGlob(n) {
			errs = append(errs, fmt.Errorf("%s is not a name glob: name characters and '*' or '?'", model.Quote(n)))
		}
	}
	if err := model.CheckLabels(g.Labels); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Describe says what g allows, for messages.
func (g Grant) Describe() string {
	what := "only names no other agent serves"
	if g.Scoped() {
		what = strings.Join(g.Names, ",")
	}
	if len(g.Labels) > 0 {
		what += " with labels " + Selector(toSelector(g.Labels)).String()
	}
	return what
}

func toSelector(m map[string]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = []string{v}
	}
	return out
}

// Claim records that an agent with an unscoped grant took a name first.
type Claim struct {
	Name  string    `json:"name"`
	Agent string    `json:"agent"`
	At    time.Time `json:"at"`
}

// ClaimOf returns the claim on name, if any.
func (p *Policy) ClaimOf(name string) (Claim, bool) {
	c, ok := p.claims[name]
	return c, ok
}

// MayServe reports why agent (with grant g) may not serve the resource
// name with labels, or nil when it may. For an unscoped grant it asks only
// whether the agent holds the name's claim; taking a free name is the
// router's job, which alone sees every agent.
func (p *Policy) MayServe(agent string, g Grant, name string, labels map[string]string) error {
	if g.Scoped() {
		if !model.MatchAny(g.Names, name) {
			return fmt.Errorf("resource %s is outside this agent's grant (%s from token %s); join with a token that grants it (`warren token add --resources %s`)", name, g.Describe(), g.Token, name)
		}
	} else if c, ok := p.claims[name]; !ok || c.Agent != agent {
		holder := "no claim yet"
		if ok {
			holder = "claimed by agent " + c.Agent
		}
		return fmt.Errorf("resource %s is not this agent's (%s) and its token %s names no resources; join with a token that grants it (`warren token add --resources %s`)", name, holder, g.Token, name)
	}
	for k, v := range g.Labels {
		if got, ok := labels[k]; ok && got != v {
			return fmt.Errorf("resource %s: label %s=%s contradicts this agent's grant (%s=%s)", name, k, model.Quote(got), k, v)
		}
	}
	return nil
}

// Token is a join token as the cluster stores it: hashed, with its grant.
type Token struct {
	ID string `json:"id"`
	// Hash is the hex SHA-256 of the secret; the secret is never stored.
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Uses, if positive, is how many agents may join with the token; Used
	// counts them. Only the Origin proxy counts, so that two proxies can
	// never both take a token's last use.
	Uses   int    `json:"uses,omitempty"`
	Used   int    `json:"used,omitempty"`
	Origin string `json:"origin"`
	// Grant is copied into every agent that joins with the token (its
	// Token field is the token's ID).
	Grant Grant `json:"grant"`
	// RenewFor is how long after joining an agent's certificate is renewed.
	RenewFor  time.Duration `json:"renew_for"`
	CreatedBy string        `json:"created_by,omitempty"`
}

// Token bounds.
const (
	DefaultTokenTTL = 30 * time.Minute
	MaxTokenTTL     = 30 * 24 * time.Hour
	// DefaultRenewFor is how long an agent's certificate is renewed after
	// it joins, unless its token says otherwise; then it joins again.
	DefaultRenewFor = 90 * 24 * time.Hour
	MaxRenewFor     = 365 * 24 * time.Hour
)

// TokenID derives a token's public id from its secret: the first 12 hex
// digits of its SHA-256. Knowing it tells nothing of the secret.
func TokenID(secret string) string { return HashToken(secret)[:12] }

// HashToken returns the hex SHA-256 of a token's secret.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ValidTokenID reports whether s looks like a token id.
func ValidTokenID(s string) bool {
	if len(s) != 12 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// TokenRequest is what `warren token add` asks for.
type TokenRequest struct {
	TTL       time.Duration     `json:"ttl"`
	Uses      int               `json:"uses,omitempty"`
	Resources []string          `json:"resources,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	RenewFor  time.Duration     `json:"renew_for,omitempty"`
}

// Validate reports every problem at once, with defaults applied to a copy.
func (r TokenRequest) Validate() (TokenRequest, error) {
	var errs conf.Errors
	switch {
	case r.TTL == 0:
		r.TTL = DefaultTokenTTL
	case r.TTL < time.Second || r.TTL > MaxTokenTTL:
		errs.Addf("ttl", "%s is outside 1s to %s", r.TTL, MaxTokenTTL)
	}
	switch {
	case r.RenewFor == 0:
		r.RenewFor = DefaultRenewFor
	case r.RenewFor < time.Hour || r.RenewFor > MaxRenewFor:
		errs.Addf("renew_for", "%s is outside 1h to %s", r.RenewFor, MaxRenewFor)
	}
	if r.Uses < 0 || r.Uses > 10000 {
		errs.Addf("uses", "%d is outside 0 (until it expires) to 10000", r.Uses)
	}
	if err := (Grant{Names: r.Resources, Labels: r.Labels}).Validate(); err != nil {
		errs.Addf("resources", "%v", err)
	}
	return r, errs.Err()
}

// Redeemable reports why the token cannot be used to join now, or nil.
func (t Token) Redeemable(p *Policy, now time.Time) error {
	switch {
	case !now.Before(t.Expires):
		return fmt.Errorf("join token %s expired at %s; ask an administrator for a new one (`warren token add`)", t.ID, t.Expires.UTC().Format(time.RFC3339))
	case t.Uses > 0 && t.Used >= t.Uses:
		return fmt.Errorf("join token %s has been used %d of %d times; ask an administrator for a new one (`warren token add`)", t.ID, t.Used, t.Uses)
	}
	if l, ok := p.Locked(LockToken, t.ID, now); ok {
		return errors.New(l.Sentence())
	}
	return nil
}

// FindToken looks a secret up among the stored tokens, in constant time
// with respect to the secret once its id is known.
func (p *Policy) FindToken(secret string) (Token, bool) {
	if secret == "" || len(secret) > 256 {
		return Token{}, false
	}
	h := HashToken(secret)
	t, ok := p.tokens[h[:12]]
	if !ok || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(h)) != 1 {
		return Token{}, false
	}
	return t, true
}

// Tokens returns every stored token, sorted by expiry.
func (p *Policy) Tokens() []Token {
	out := make([]Token, 0, len(p.tokens))
	for _, t := range p.tokens {
		out = append(out, t)
	}
	sortBy(out, func(t Token) string { return t.Expires.UTC().Format(time.RFC3339Nano) + t.ID })
	return out
}

// Token returns a stored token by id.
func (p *Policy) Token(id string) (Token, bool) {
	t, ok := p.tokens[id]
	return t, ok
}
