package usersh

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/accept/accepttest"
)

// TestServeSurvivesEMFILE: Serve waits out a run of EMFILE errors (5 ms,
// 10 ms, 20 ms, … rather than spinning, or returning and leaving users
// without a listener), then serves the next user.
func TestServeSurvivesEMFILE(t *testing.T) {
	a := newAuthority(t)
	logger, logs := captureLog()
	const fails = 4
	var fl *accepttest.EMFILEListener
	start := time.Now()
	s := startServerOn(t, a, Config{Logger: logger}, func(ln net.Listener) net.Listener {
		fl = &accepttest.EMFILEListener{Listener: ln, Fail: fails}
		return fl
	})
	c := s.dial(t, "alice", userSigner(t, a, time.Time{}))
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("session after %d EMFILE errors: %v", fails, err)
	}
	sess.Close()
	if n := fl.Failed(); n != fails {
		t.Errorf("%d failed accepts, want %d", n, fails)
	}
	if el, want := time.Since(start), (5+10+20+40)*time.Millisecond; el < want {
		t.Errorf("served after %v, before the backoff's %v: Serve did not wait", el, want)
	}
	if got := strings.Count(logs.String(), "accept user connection failed; retrying"); got != fails {
		t.Errorf("%d retries logged, want %d:\n%s", got, fails, logs.String())
	}
	select {
	case err := <-s.served:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
}
