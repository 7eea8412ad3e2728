package proxy

import (
	"strings"
	"testing"

	"github.com/warren-proxy/warren/internal/model"
)

// TestStrategiesAreChecked: the proxy accepts every strategy of
// model.Strategies (the words the session orders candidates by) and no
// other.
func TestStrategiesAreChecked(t *testing.T) {
	for _, s := range append(append([]string(nil), model.Strategies...), "fastest") {
		c := Config{Session: SessionConfig{Strategy: s}}
		_, err := c.CheckAndSetDefaults()
		refused := err != nil && strings.Contains(err.Error(), "session.strategy")
		if want := s == "fastest"; refused != want {
			t.Errorf("strategy %q: refused %v, want %v (%v)", s, refused, want, err)
		}
	}
}
