package connect

import (
	"testing"

	"go.uber.org/goleak"
)

// Every probe's goroutines end before Connect returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
