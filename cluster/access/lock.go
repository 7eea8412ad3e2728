package access

import (
	"fmt"
	"sort"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

// Lock kinds: what a lock targets.
const (
	LockUser  = "user"
	LockAgent = "agent"
	LockToken = "token"
)

// Lock refuses a party everywhere: a user (their connections and
// sessions), an agent (its tunnels, its certificate's renewal), or a join
// token (joins with it, and every agent that joined with it).
type Lock struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Message string    `json:"message,omitempty"`
	Created time.Time `json:"created"`
	// Expires, if set, ends the lock.
	Expires   time.Time `json:"expires,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Validate reports a lock that cannot be stored.
func (l Lock) Validate() error {
	switch l.Kind {
	case LockUser:
		if !ValidUser(l.Name) {
			return fmt.Errorf("user name %s is not valid", model.Quote(l.Name))
		}
	case LockAgent:
		if err := model.CheckName("agent id", l.Name); err != nil {
			return err
		}
	case LockToken:
		if !ValidTokenID(l.Name) {
			return fmt.Errorf("token id %s is not valid: 12 hex digits, as `warren token ls` shows", model.Quote(l.Name))
		}
	default:
		return fmt.Errorf("unknown lock kind %s: use user, agent or token", model.Quote(l.Kind))
	}
	if len(l.Message) > 256 {
		return fmt.Errorf("message of %d bytes; at most 256", len(l.Message))
	}
	return nil
}

// ValidUser reports whether s is a valid Warren user name (the rule user
// certificates are issued by).
func ValidUser(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return false
		}
	}
	return true
}

// Active reports whether the lock holds at now.
func (l Lock) Active(now time.Time) bool { return l.Expires.IsZero() || now.Before(l.Expires) }

// Sentence is what a locked party is told.
func (l Lock) Sentence() string {
	s := fmt.Sprintf("access denied: %s %s is locked by an administrator", l.Kind, l.Name)
	if l.Message != "" {
		s += ": " + l.Message
	}
	if !l.Expires.IsZero() {
		s += " (until " + l.Expires.UTC().Format(time.RFC3339) + ")"
	}
	return s
}

// Locked returns the active lock on (kind, name), if any.
func (p *Policy) Locked(kind, name string, now time.Time) (Lock, bool) {
	l, ok := p.locks[lockKey{kind, name}]
	if !ok || !l.Active(now) {
		return Lock{}, false
	}
	return l, true
}

// AgentLocked returns the lock that shuts agent out: on the agent itself or
// on the token it joined with.
func (p *Policy) AgentLocked(agent string, g Grant, now time.Time) (Lock, bool) {
	if l, ok := p.Locked(LockAgent, agent, now); ok {
		return l, true
	}
	if g.Token != "" {
		return p.Locked(LockToken, g.Token, now)
	}
	return Lock{}, false
}

// Locks returns every lock (active or expired), sorted by kind and name.
func (p *Policy) Locks() []Lock {
	out := make([]Lock, 0, len(p.locks))
	for _, l := range p.locks {
		out = append(out, l)
	}
	sortBy(out, func(l Lock) string { return l.Kind + "/" + l.Name })
	return out
}

func sortBy[T any](s []T, key func(T) string) {
	sort.Slice(s, func(i, j int) bool { return key(s[i]) < key(s[j]) })
}
