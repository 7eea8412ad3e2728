package clustertest

import "testing"

// TestMain runs proxy processes of this package's clusters, and fails the
// package if a cluster leaves a goroutine behind.
func TestMain(m *testing.M) { Main(m) }
