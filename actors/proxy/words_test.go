package proxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/actors/session"
	"github.com/warren-proxy/warren/internal/model"
)

// TestStrategiesAreModels: the proxy checks session.strategy with
// model.CheckStrategy and hands the word to the session actor, which has
// its own names for the strategies; they must be the same words.
func TestStrategiesAreModels(t *testing.T) {
	got := []string{session.StrategyDefault, session.StrategyRandom, session.StrategyLeastSessions, session.StrategyNearest}
	if !slices.Equal(got, model.Strategies) {
		t.Errorf("session strategies %q, model.Strategies %q: they must agree", got, model.Strategies)
	}
	for _, s := range append(got, "fastest") {
		c := Config{Session: SessionConfig{Strategy: s}}
		_, err := c.CheckAndSetDefaults()
		refused := err != nil && strings.Contains(err.Error(), "session.strategy")
		if want := s == "fastest"; refused != want {
			t.Errorf("strategy %q: refused %v, want %v (%v)", s, refused, want, err)
		}
	}
}
