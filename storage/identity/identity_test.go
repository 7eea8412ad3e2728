package identity_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/warren-proxy/warren/storage/identity"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)

func open(t *testing.T, path string) *identity.Store {
	t.Helper()
	s, err := identity.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func sample() identity.Identity {
	return identity.Identity{
		AgentID:    "agent-7f3a",
		PrivateKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"),
		HostCert:   []byte("ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ= agent-7f3a\n"),
		HostCA:     []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI warren-host-ca\n"),
		Proxies:    []string{"proxy-1.example.com:3024", "10.0.0.2:3024"},
		JoinedAt:   t0,
		UpdatedAt:  t0.Add(time.Hour),
	}
}

func TestNoneYet(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"))
	defer s.Close()
	id, ok, err := s.Load()
	if err != nil || ok || !reflect.DeepEqual(id, identity.Identity{}) {
		t.Errorf("Load of a new file: got %+v, %v, %v, want zero, false, nil", id, ok, err)
	}
}

func TestSaveLoadReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.db")
	s := open(t, path)
	first := sample()
	if err := s.Save(first); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if got, ok, err := s.Load(); err != nil || !ok || !reflect.DeepEqual(got, first) {
		t.Errorf("Load: got %+v, %v, %v, want %+v, true, nil", got, ok, err, first)
	}

	// A renewed certificate replaces the whole identity.
	renewed := sample()
	renewed.HostCert = []byte("ssh-ed25519-cert-v01@openssh.com AAAArenewed agent-7f3a\n")
	renewed.Proxies = nil
	renewed.UpdatedAt = t0.Add(48 * time.Hour).In(time.FixedZone("X", 7200))
	if err := s.Save(renewed); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, path)
	defer s.Close()
	want := renewed
	want.UpdatedAt = t0.Add(48 * time.Hour) // stored in UTC
	if got, ok, err := s.Load(); err != nil || !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Load after reopen: got %+v, %v, %v, want %+v, true, nil", got, ok, err, want)
	}
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "sub", "identity.db")
	s := open(t, fresh)
	if err := s.Save(sample()); err != nil {
		t.Fatal(err)
	}
	s.Close()

	loose := filepath.Join(dir, "loose.db")
	open(t, loose).Close()
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, loose).Close()

	tests := []struct {
		name string
		path string
		want os.FileMode
	}{
		{"new file", fresh, 0o600},
		{"loose file reopened", loose, 0o600},
		{"created directory", filepath.Dir(fresh), 0o700},
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tt.want {
			t.Errorf("%s: got mode %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOpenInUse(t *testing.T) {
	t.Parallel() // it waits out the 2s lock timeout
	path := filepath.Join(t.TempDir(), "identity.db")
	s := open(t, path)
	defer s.Close()
	s2, err := identity.Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded, want ErrInUse")
	}
	want := "identity file " + path + " is in use by another process"
	if !errors.Is(err, identity.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Errorf("got error %q, want ErrInUse containing %q", err, want)
	}
}

func TestSaveInvalid(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"))
	defer s.Close()
	tests := []struct {
		name string
		id   identity.Identity
		want string
	}{
		{"empty", identity.Identity{}, "save identity: no agent ID and private key"},
		{"no agent ID", identity.Identity{PrivateKey: []byte("k")}, "save identity: no agent ID"},
		{"no key", identity.Identity{AgentID: "a"}, "save identity: no private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Save(tt.id); err == nil || err.Error() != tt.want {
				t.Errorf("got error %v, want %q", err, tt.want)
			}
		})
	}
	if _, ok, _ := s.Load(); ok {
		t.Error("an invalid identity was saved")
	}
	if _, err := identity.Open(""); err == nil || !strings.Contains(err.Error(), "path is empty") {
		t.Errorf("Open(\"\"): got error %v, want one saying the path is empty", err)
	}
}

func TestClosed(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load(); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("Load after Close: got %v, want ErrClosed", err)
	}
	if err := s.Save(sample()); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("Save after Close: got %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

func rawUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.db")
	open(t, path).Close()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("identity")).Put([]byte("current"), []byte(`{"agent_id":7}`))
	})
	s := open(t, path)
	defer s.Close()
	_, _, err := s.Load()
	if !errors.Is(err, identity.ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Errorf("got error %v, want ErrCorrupt naming %s", err, path)
	}
	// Saving over it recovers.
	if err := s.Save(sample()); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Load(); err != nil || !ok {
		t.Errorf("Load after Save: got %v, %v, want true, nil", ok, err)
	}
}

func TestFormatVersionMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.db")
	open(t, path).Close()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("2"))
	})
	s, err := identity.Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of another format succeeded, want an error")
	}
	if want := `format version is "2"`; !strings.Contains(err.Error(), want) {
		t.Errorf("got error %v, want one containing %q", err, want)
	}
}
