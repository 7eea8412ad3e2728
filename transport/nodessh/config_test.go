package nodessh

import (
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestConfigValidate(t *testing.T) {
	good := newSigner(t)
	ca := newSigner(t).PublicKey()
	cert := &ssh.Certificate{Key: ca, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // one substring per expected problem
	}{
		{"valid", Config{HostSigners: []ssh.Signer{good}, UserCAs: []ssh.PublicKey{ca}}, nil},
		{"valid with sftp command", Config{HostSigners: []ssh.Signer{good}, UserCAs: []ssh.PublicKey{ca}, SFTPCommand: []string{"/usr/lib/openssh/sftp-server", "-e"}}, nil},
		{"empty", Config{}, []string{"HostSigners is empty", "UserCAs is empty"}},
		{"nil entries", Config{HostSigners: []ssh.Signer{nil}, UserCAs: []ssh.PublicKey{nil}}, []string{"HostSigners[0] is nil", "UserCAs[0] is nil"}},
		{"certificate as CA", Config{HostSigners: []ssh.Signer{good}, UserCAs: []ssh.PublicKey{cert}}, []string{"UserCAs[0] is a certificate"}},
		{"relative sftp command", Config{HostSigners: []ssh.Signer{good}, UserCAs: []ssh.PublicKey{ca}, SFTPCommand: []string{"sftp-server", "a\x00b"}}, []string{"must be an absolute path", "SFTPCommand[1] contains a NUL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.cfg
			hostSigners := slices.Clone(tc.cfg.HostSigners)
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				s, err := New(tc.cfg)
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close = %v", err)
				}
				return
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != len(tc.want) {
				t.Fatalf("Validate = %v, want %d problems", err, len(tc.want))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v, want it to mention %q", err, w)
				}
			}
			if _, err := New(tc.cfg); err == nil {
				t.Errorf("New accepted an invalid config")
			}
			if !slices.Equal(hostSigners, tc.cfg.HostSigners) || before.Banner != tc.cfg.Banner || (before.Logger == nil) != (tc.cfg.Logger == nil) {
				t.Errorf("Validate modified the config")
			}
		})
	}
}

// TestNewDoesNotAlias checks that the server keeps its own copy of the
// caller's slices.
func TestNewDoesNotAlias(t *testing.T) {
	ca := newSigner(t).PublicKey()
	cfg := Config{HostSigners: []ssh.Signer{newSigner(t)}, UserCAs: []ssh.PublicKey{ca}, SFTPCommand: []string{"/bin/true"}}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg.UserCAs[0] = newSigner(t).PublicKey()
	cfg.SFTPCommand[0] = "/bin/false"
	if string(s.cfg.UserCAs[0].Marshal()) != string(ca.Marshal()) || s.cfg.SFTPCommand[0] != "/bin/true" {
		t.Errorf("server follows changes to the caller's slices")
	}
	if cfg.Logger != nil || cfg.Clock != nil {
		t.Errorf("New wrote defaults into the caller's config")
	}
}
