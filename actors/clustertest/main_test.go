package clustertest

import "testing"

// TestMain fails the package if a cluster leaves a goroutine behind.
func TestMain(m *testing.M) { VerifyNoLeaks(m) }
