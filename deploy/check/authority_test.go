package check

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/warren-proxy/warren/transport/pki"
)

// newAuthority runs what `warren init --data-dir dir` runs, then makes its
// files group-readable, as a Secret volume with an fsGroup shows them.
func newAuthority(t *testing.T, dir string) *pki.Authority {
	t.Helper()
	a, err := pki.Init(dir, pki.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chmod(filepath.Join(dir, e.Name()), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return a
}

// loadAuthority loads the identity in dir as a proxy does at start-up
// and checks it is want's.
func loadAuthority(t *testing.T, dir string, want *pki.Authority) {
	t.Helper()
	got, err := pki.Load(dir)
	if err != nil {
		t.Fatalf("the proxy cannot load the auth_dir the init container wrote: %v", err)
	}
	if pki.Fingerprint(got.HostCA.PublicKey()) != pki.Fingerprint(want.HostCA.PublicKey()) {
		t.Fatal("the auth_dir copy holds another host CA")
	}
}
