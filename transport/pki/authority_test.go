package pki

import (
	"bytes"
	"crypto"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestMain(m *testing.M) {
	// Refused tokens are logged; the tests provoke many on purpose.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

// newTestAuthority makes a fresh identity in a temporary directory.
func newTestAuthority(t *testing.T) *Authority {
	t.Helper()
	a, err := Init(filepath.Join(t.TempDir(), "data"), InitOptions{ClusterName: "test"})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return a
}

func TestInitLoadRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "data")
	a, err := Init(dir, InitOptions{ClusterName: "prod", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.Dir != dir {
		t.Errorf("Dir: got %q, want %q", b.Dir, dir)
	}
	if b.ClusterName != "prod" {
		t.Errorf("ClusterName: got %q, want %q", b.ClusterName, "prod")
	}
	if !sameKey(a.UserCA.PublicKey(), b.UserCA.PublicKey()) {
		t.Error("user CA: loaded key differs from the one Init made")
	}
	if !sameKey(a.HostCA.PublicKey(), b.HostCA.PublicKey()) {
		t.Error("host CA: loaded key differs from the one Init made")
	}
	if !sameKey(a.AgentCA.PublicKey(), b.AgentCA.PublicKey()) {
		t.Error("agent CA: loaded key differs from the one Init made")
	}
	// Three distinct CAs: a certificate from one never passes for another's.
	cas := []struct {
		name string
		key  ssh.PublicKey
	}{{"user", a.UserCA.PublicKey()}, {"host", a.HostCA.PublicKey()}, {"agent", a.AgentCA.PublicKey()}}
	for i, x := range cas {
		for _, y := range cas[i+1:] {
			if sameKey(x.key, y.key) {
				t.Errorf("%s and %s CA share a key, want distinct keys", x.name, y.name)
			}
		}
	}
	if !a.TLSCert.Equal(b.TLSCert) {
		t.Error("TLS CA: loaded certificate differs from the one Init made")
	}
	if !b.TLSCert.IsCA {
		t.Error("TLS CA: got IsCA false, want true")
	}
	if got, want := b.TLSCert.NotBefore, now.Add(-ClockSkew); !got.Equal(want) {
		t.Errorf("TLS CA NotBefore: got %v, want %v", got, want)
	}
	if got, want := b.TLSCert.NotAfter, now.Add(TLSCAValidity); !got.Equal(want) {
		t.Errorf("TLS CA NotAfter: got %v, want %v", got, want)
	}
	if pub, ok := b.TLSKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(a.TLSKey.Public()) {
		t.Error("TLS CA: loaded key differs from the one Init made")
	}

	userCA, hostCA, agentCA, err := LoadPublic(dir)
	if err != nil {
		t.Fatalf("LoadPublic: %v", err)
	}
	if !sameKey(userCA, a.UserCA.PublicKey()) || !sameKey(hostCA, a.HostCA.PublicKey()) || !sameKey(agentCA, a.AgentCA.PublicKey()) {
		t.Error("LoadPublic: got keys that differ from the CAs")
	}

	// A certificate issued by the first Authority verifies with the second.
	signer, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := a.IssueUserCert(signer.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckUserCert(cert, CertOptions{Authorities: []ssh.PublicKey{b.UserCA.PublicKey()}}); err != nil {
		t.Errorf("CheckUserCert with the loaded CA: %v", err)
	}

	for _, name := range []string{FileJoinTokens, FileAPIToken} {
		toks, err := readTokens(t, dir, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(toks) != 1 || len(toks[0]) < 32 {
			t.Errorf("%s: got tokens %q, want one token of at least 128 bits", name, toks)
		}
	}
}

func readTokens(t *testing.T, dir, name string) ([]string, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	return parseTokens(string(data)), err
}

func TestInitDefaultClusterName(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.ClusterName != DefaultClusterName {
		t.Errorf("got cluster name %q, want %q", a.ClusterName, DefaultClusterName)
	}
}

func TestInitRefusesExistingIdentity(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
	}{
		{"full identity", func(t *testing.T, dir string) {
			if _, err := Init(dir, InitOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"only a join token file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, FileJoinTokens), "tok\n", 0o600)
		}},
		{"only a public key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, FileHostCAPub), "", 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			before := listDir(t, dir)
			_, err := Init(dir, InitOptions{})
			want := dir + " already holds a cluster identity; use another --data-dir or remove it"
			if err == nil || err.Error() != want {
				t.Fatalf("got error %v, want %q", err, want)
			}
			if !errors.Is(err, ErrIdentityExists) {
				t.Errorf("errors.Is(err, ErrIdentityExists): got false, want true")
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("directory changed: got %s, want %s", after, before)
			}
		})
	}
}

func TestInitAcceptsDirWithOtherFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pebble.log"), "x", 0o644)
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
}

func TestInitOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		cluster string
		wantErr bool
	}{
		{"empty means default", "", false},
		{"plain", "prod-eu.1", false},
		{"space", "my cluster", true},
		{"leading dash", "-x", true},
		{"too long", strings.Repeat("a", 64), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := InitOptions{ClusterName: tt.cluster}.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Errorf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
	if _, err := Init(t.TempDir(), InitOptions{ClusterName: "a b"}); err == nil {
		t.Error("Init with an invalid cluster name: got no error, want one")
	}
}

func TestInitFileModes(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T) string
	}{
		{"new directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a", "b") }},
		{"existing open directory", func(t *testing.T) string {
			dir := filepath.Join(t.TempDir(), "open")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
	}
	want := map[string]fs.FileMode{
		FileUserCA: 0o600, FileUserCAPub: 0o644,
		FileHostCA: 0o600, FileHostCAPub: 0o644,
		FileAgentCA: 0o600, FileAgentCAPub: 0o644,
		FileTLSCAKey: 0o600, FileTLSCACert: 0o644,
		FileJoinTokens: 0o600, FileAPIToken: 0o600, FileGossipKey: 0o600,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.prepare(t)
			if _, err := Init(dir, InitOptions{}); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o700 {
				t.Errorf("directory: got mode %04o, want 0700", got)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(want) {
				t.Errorf("got %d files (%s), want %d (no temporary files left)", len(entries), listDir(t, dir), len(want))
			}
			for name, mode := range want {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if got := fi.Mode().Perm(); got != mode {
					t.Errorf("%s: got mode %04o, want %04o", name, got, mode)
				}
			}
		})
	}
}

func TestLoadRefusesLooseSecretModes(t *testing.T) {
	for _, file := range []string{FileUserCA, FileHostCA, FileAgentCA, FileTLSCAKey, FileJoinTokens, FileAPIToken} {
		for _, mode := range []fs.FileMode{0o644, 0o640, 0o604} {
			t.Run(file+"/"+mode.String(), func(t *testing.T) {
				a := newTestAuthority(t)
				path := filepath.Join(a.Dir, file)
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				_, err := Load(a.Dir)
				want := path + " has mode " + octal(mode) + "; run chmod 600 " + path
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want one containing %q", err, want)
				}
			})
		}
	}
}

func octal(m fs.FileMode) string {
	const digits = "01234567"
	p := m.Perm()
	return "0" + string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestLoadMissingFile(t *testing.T) {
	for _, file := range identityFiles {
		t.Run(file, func(t *testing.T) {
			a := newTestAuthority(t)
			path := filepath.Join(a.Dir, file)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			_, err := Load(a.Dir)
			if err == nil {
				t.Fatal("got no error, want one")
			}
			// Half an agent CA is damage, like any missing file; an
			// identity without both halves is one made before the agent CA
			// existed (TestUpgrade).
			if errors.Is(err, ErrNeedsUpgrade) {
				t.Errorf("got %q: one missing file of the agent CA is not an old identity", err)
			}
			for _, want := range []string{path + " is missing", "point to the directory `warren init` wrote", "a new `warren init` would make another cluster"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got error %q, want one containing %q", err, want)
				}
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("errors.Is(err, fs.ErrNotExist): got false, want true")
			}
		})
	}
	t.Run("no directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nothing")
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), "point to the directory `warren init` wrote") {
			t.Errorf("got error %v, want one saying where the identity should be", err)
		}
	})
}

func TestLoadInvalidFile(t *testing.T) {
	other := newTestAuthority(t)
	tests := []struct {
		name string
		file string
		// content makes the bad content from the identity under test.
		content func(a *Authority) string
		mode    fs.FileMode
		want    string
	}{
		{"garbage user CA", FileUserCA, func(*Authority) string { return "garbage" }, 0o600,
			"user_ca is not an unencrypted OpenSSH private key"},
		{"garbage host CA pub", FileHostCAPub, func(*Authority) string { return "ssh-ed25519 !!!" }, 0o644,
			"host_ca.pub is not an OpenSSH public key line"},
		{"user CA pub of another cluster", FileUserCAPub, func(*Authority) string {
			return string(authorizedKey(other.UserCA.PublicKey(), ""))
		}, 0o644, "user_ca.pub does not match"},
		{"host CA pub swapped with user CA pub", FileHostCAPub, func(a *Authority) string {
			return string(authorizedKey(a.UserCA.PublicKey(), ""))
		}, 0o644, "host_ca.pub does not match"},
		{"agent CA pub swapped with host CA pub", FileAgentCAPub, func(a *Authority) string {
			return string(authorizedKey(a.HostCA.PublicKey(), ""))
		}, 0o644, "agent_ca.pub does not match"},
		{"garbage agent CA", FileAgentCA, func(*Authority) string { return "garbage" }, 0o600,
			"agent_ca is not an unencrypted OpenSSH private key"},
		{"TLS key not PEM", FileTLSCAKey, func(*Authority) string { return "x" }, 0o600,
			"tls_ca.key is not a PKCS#8 PEM"},
		{"TLS cert of another cluster", FileTLSCACert, func(*Authority) string {
			data, err := os.ReadFile(filepath.Join(other.Dir, FileTLSCACert))
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		}, 0o644, "tls_ca.crt does not match"},
		{"empty API token", FileAPIToken, func(*Authority) string { return "# none\n" }, 0o600,
			"api_token holds no token"},
		{"two API tokens", FileAPIToken, func(*Authority) string { return "a\nb\n" }, 0o600,
			"api_token holds more than one token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAuthority(t)
			writeFile(t, filepath.Join(a.Dir, tt.file), tt.content(a), tt.mode)
			_, err := Load(a.Dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadPublicMissing(t *testing.T) {
	for _, file := range []string{FileUserCAPub, FileHostCAPub, FileAgentCAPub} {
		t.Run(file, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Init(dir, InitOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, file)); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := LoadPublic(dir)
			if want := filepath.Join(dir, file) + " is missing"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got error %v, want one containing %q", err, want)
			}
		})
	}
}

func TestLoadPublicNeedsOnlyPublicFiles(t *testing.T) {
	src := newTestAuthority(t)
	dir := t.TempDir()
	for _, f := range []string{FileUserCAPub, FileHostCAPub, FileAgentCAPub} {
		data, err := os.ReadFile(filepath.Join(src.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, f), string(data), 0o644)
	}
	userCA, hostCA, agentCA, err := LoadPublic(dir)
	if err != nil {
		t.Fatalf("LoadPublic: %v", err)
	}
	if !sameKey(userCA, src.UserCA.PublicKey()) || !sameKey(hostCA, src.HostCA.PublicKey()) || !sameKey(agentCA, src.AgentCA.PublicKey()) {
		t.Error("got keys that differ from the CAs")
	}
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		t.Fatal(err)
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return "[" + strings.Join(names, " ") + "]"
}

func TestInitWritesAgentCA(t *testing.T) {
	a := newTestAuthority(t)
	if a.AgentCA == nil {
		t.Fatal("Init: got no agent CA, want one")
	}
	signer, err := loadSSHCA(a.Dir, FileAgentCA, FileAgentCAPub)
	if err != nil {
		t.Fatalf("agent CA files: %v", err)
	}
	if !sameKey(signer.PublicKey(), a.AgentCA.PublicKey()) {
		t.Error("agent_ca: got another key than the Authority's agent CA")
	}
	if sameKey(a.AgentCA.PublicKey(), a.HostCA.PublicKey()) {
		t.Error("agent CA and host CA share a key, want distinct CAs so that no agent certificate passes for a proxy")
	}
	pub, err := os.ReadFile(filepath.Join(a.Dir, FileAgentCAPub))
	if err != nil {
		t.Fatal(err)
	}
	if want := "warren agent host CA (test)"; !strings.Contains(string(pub), want) {
		t.Errorf("%s: got %q, want its comment to name %q", FileAgentCAPub, pub, want)
	}
}

// TestUpgrade takes an identity as an older Warren made it (no agent CA)
// through Load's refusal, Upgrade, and Load again.
func TestUpgrade(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	old, err := Init(dir, InitOptions{ClusterName: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FileAgentCA, FileAgentCAPub} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	keep := map[string][]byte{}
	for _, f := range []string{FileUserCA, FileUserCAPub, FileHostCA, FileHostCAPub, FileTLSCAKey, FileTLSCACert, FileJoinTokens, FileAPIToken, FileGossipKey} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		keep[f] = data
	}

	_, err = Load(dir)
	if !errors.Is(err, ErrNeedsUpgrade) {
		t.Fatalf("Load of an identity without %s: got %v, want an error wrapping ErrNeedsUpgrade", FileAgentCA, err)
	}
	if want := "warren init --upgrade --data-dir " + dir; !strings.Contains(err.Error(), want) {
		t.Errorf("got %q, want it to say how to upgrade: %q", err, want)
	}

	added, err := Upgrade(dir)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if want := []string{FileAgentCAPub, FileAgentCA}; !slices.Equal(added, want) {
		t.Errorf("Upgrade: got added %q, want %q", added, want)
	}
	for f, mode := range map[string]fs.FileMode{FileAgentCA: 0o600, FileAgentCAPub: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s after Upgrade: %v", f, err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("%s: got mode %04o, want %04o", f, got, mode)
		}
	}
	if got, want := len(strings.Fields(strings.Trim(listDir(t, dir), "[]"))), len(keep)+2; got != want {
		t.Errorf("got files %s, want %d (no temporary files left)", listDir(t, dir), want)
	}
	for f, data := range keep {
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: changed by Upgrade (err %v), want it untouched", f, err)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, FileAgentCAPub))
	if err != nil {
		t.Fatal(err)
	}
	if want := "warren agent host CA (prod)"; !strings.Contains(string(pub), want) {
		t.Errorf("%s: got %q, want the cluster's name from the TLS CA in %q", FileAgentCAPub, pub, want)
	}

	a, err := Load(dir)
	if err != nil {
		t.Fatalf("Load after Upgrade: %v", err)
	}
	if a.AgentCA == nil || sameKey(a.AgentCA.PublicKey(), a.HostCA.PublicKey()) || sameKey(a.AgentCA.PublicKey(), a.UserCA.PublicKey()) {
		t.Error("Load after Upgrade: got no agent CA, or one that shares a key with another CA")
	}
	if !sameKey(a.HostCA.PublicKey(), old.HostCA.PublicKey()) || !sameKey(a.UserCA.PublicKey(), old.UserCA.PublicKey()) {
		t.Error("Load after Upgrade: user or host CA changed, want both kept")
	}
	if a.ClusterName != "prod" {
		t.Errorf("ClusterName after Upgrade: got %q, want prod", a.ClusterName)
	}

	// A second Upgrade adds nothing and keeps the agent CA.
	before, err := os.ReadFile(filepath.Join(dir, FileAgentCA))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Upgrade(dir)
	if err != nil || len(again) != 0 {
		t.Errorf("second Upgrade: got %q, %v; want nothing added, no error", again, err)
	}
	if after, err := os.ReadFile(filepath.Join(dir, FileAgentCA)); err != nil || !bytes.Equal(after, before) {
		t.Errorf("second Upgrade replaced %s (err %v), want it kept", FileAgentCA, err)
	}
}

func TestUpgradeRefusesNonIdentity(t *testing.T) {
	tests := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"empty directory", func(t *testing.T) string { return t.TempDir() }},
		{"no directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			added, err := Upgrade(dir)
			if err == nil || !strings.Contains(err.Error(), "holds no identity to upgrade") {
				t.Errorf("got %q, %v; want an error saying there is no identity", added, err)
			}
			if _, err := os.Stat(filepath.Join(dir, FileAgentCA)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Upgrade of a non-identity: %s stat %v, want it not written", FileAgentCA, err)
			}
		})
	}
}

// TestUpgradeRefusesHalfAnAgentCA: one file of the agent CA without the
// other is damage; Upgrade must not paper over it with a new CA.
func TestUpgradeRefusesHalfAnAgentCA(t *testing.T) {
	a := newTestAuthority(t)
	if err := os.Remove(filepath.Join(a.Dir, FileAgentCA)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(a.Dir, FileAgentCAPub))
	if added, err := Upgrade(a.Dir); err == nil || !strings.Contains(err.Error(), "holds only one of") {
		t.Fatalf("Upgrade of half an agent CA: got %v, %v; want a refusal", added, err)
	}
	after, _ := os.ReadFile(filepath.Join(a.Dir, FileAgentCAPub))
	if string(before) != string(after) {
		t.Error("Upgrade rewrote the remaining half of the agent CA")
	}
}
