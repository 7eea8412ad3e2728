package nodessh

import (
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestAuthRejected checks that every kind of bad credential fails with a
// logged reason, and that the server keeps serving good clients after it.
func TestAuthRejected(t *testing.T) {
	h := newHarness(t)
	foreignCA := newSigner(t)
	for _, tc := range []struct {
		name   string
		spec   *certSpec // nil: a plain key without certificate
		login  string    // "" = the harness login
		reason string    // expected in the server log
	}{
		{"plain key", nil, "", "plain public keys are not accepted"},
		{"expired", &certSpec{validAfter: h.now.Add(-2 * time.Hour), validBefore: h.now.Add(-time.Hour)}, "", "certificate expired at"},
		{"not yet valid", &certSpec{validAfter: h.now.Add(time.Hour), validBefore: h.now.Add(2 * time.Hour)}, "", "certificate is not valid before"},
		{"foreign CA", &certSpec{ca: foreignCA}, "", "certificate is not signed by the cluster user CA"},
		{"login not a principal", &certSpec{principals: []string{"somebody-else"}}, "", "is not a principal of the certificate"},
		{"no principals", &certSpec{principals: []string{}}, "", "certificate names no logins (principals)"},
		{"certificate has critical options verify-required, which Warren does not enforce", &certSpec{critical: map[string]string{"verify-required": ""}}, "", "certificate has critical options verify-required, which Warren does not enforce"},
		{"source-address elsewhere", &certSpec{critical: map[string]string{"source-address": "192.0.2.0/24"}}, "", "certificate may be used only from 192.0.2.0/24, not from 127."},
		{"unknown login", &certSpec{principals: []string{"no-such-user-warren"}}, "no-such-user-warren", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := h.writeKey(strings.ReplaceAll(tc.name, " ", "-"), tc.spec)
			login := tc.login
			if login == "" {
				login = h.login
			}
			res := h.run(nil, "ssh", h.sshArgs(key, login, nil, "echo", "should-not-run")...)
			if res.code != 255 || strings.Contains(res.stdout, "should-not-run") {
				t.Errorf("ssh: exit %d stdout %q, want exit 255 and no output", res.code, res.stdout)
			}
			if !strings.Contains(res.stderr, "Permission denied") {
				t.Errorf("ssh stderr = %q, want a Permission denied", res.stderr)
			}
			reason := tc.reason
			if reason == "" && os.Geteuid() == 0 {
				reason = `no such user \"no-such-user-warren\"`
			}
			if reason != "" {
				h.waitLog(t, reason)
			}
			if got := h.mustSSH("echo still-serving"); got != "still-serving\n" {
				t.Errorf("good client after rejection: stdout %q", got)
			}
		})
	}
}

// TestAuthSourceAddress checks that a certificate bound to the client's
// address (source-address, which pki's check honours) logs in.
func TestAuthSourceAddress(t *testing.T) {
	h := newHarness(t)
	key := h.writeKey("bound", &certSpec{critical: map[string]string{"source-address": "192.0.2.1,127.0.0.0/8"}})
	res := h.run(nil, "ssh", h.sshArgs(key, h.login, nil, "echo", "bound-ok")...)
	if res.code != 0 || res.stdout != "bound-ok\n" {
		t.Errorf("ssh with a certificate bound to 127.0.0.0/8: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
}

// TestAuthHostCertAsUserCert offers a host certificate for user auth, which
// the OpenSSH client never does by itself.
func TestAuthHostCertAsUserCert(t *testing.T) {
	h := newHarness(t)
	if c, err := h.dialGo(h.login, h.signer(&certSpec{certType: ssh.HostCert})); err == nil {
		c.Close()
		t.Fatalf("login with a host certificate succeeded")
	}
	h.waitLog(t, "certificate is a host certificate, not a user certificate")
}

// TestAuthOwnUserOnly checks that an agent that is not root refuses every
// login but its own, even with a valid certificate for it.
func TestAuthOwnUserOnly(t *testing.T) {
	h := newHarness(t, withServer(func(s *Server) { s.root = false })) // as if the agent ran unprivileged
	other := "someone-else"
	key := h.writeKey("other", &certSpec{principals: []string{other}})
	res := h.run(nil, "ssh", h.sshArgs(key, other, nil, "true")...)
	if res.code != 255 {
		t.Errorf("ssh as %s: exit %d, want 255", other, res.code)
	}
	h.waitLog(t, "agent runs as "+h.login+"; cannot log in as "+other)
	if got := h.mustSSH("echo ok"); got != "ok\n" {
		t.Errorf("own login: stdout %q, want ok", got)
	}
}

// TestAuthClock checks that certificate validity follows Config.Clock,
// not the wall clock.
func TestAuthClock(t *testing.T) {
	var offset atomic.Int64
	h := newHarness(t, withConfig(func(c *Config) {
		c.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	}))
	offset.Store(int64(2 * time.Hour)) // the harness cert is valid for one hour
	if res := h.ssh(nil, nil, "true"); res.code != 255 {
		t.Errorf("with the clock 2h ahead: exit %d, want 255", res.code)
	}
	h.waitLog(t, "certificate expired at")
	offset.Store(0)
	if got := h.mustSSH("echo ok"); got != "ok\n" {
		t.Errorf("with the clock back: stdout %q", got)
	}
}

// fakeMeta is the ssh.ConnMetadata of a connection that never happened.
type fakeMeta struct{ user string }

func (m fakeMeta) User() string          { return m.user }
func (m fakeMeta) SessionID() []byte     { return nil }
func (m fakeMeta) ClientVersion() []byte { return []byte("SSH-2.0-test") }
func (m fakeMeta) ServerVersion() []byte { return []byte("SSH-2.0-Warren") }
func (m fakeMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242} }
func (m fakeMeta) LocalAddr() net.Addr   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22} }

// TestAuthPermissions checks what handlers learn about the user, and that
// a certificate cannot spoof it.
func TestAuthPermissions(t *testing.T) {
	h := newHarness(t)
	key := newSigner(t)
	cert := h.issue(key.PublicKey(), &certSpec{extensions: map[string]string{ExtensionLogin: "spoofed", ExtensionKeyID: "spoofed"}})
	perms, err := h.srv.authenticate(nil, fakeMeta{user: h.login}, cert)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	if got := perms.Extensions[ExtensionKeyID]; got != cert.KeyId {
		t.Errorf("key id extension = %q, want %q", got, cert.KeyId)
	}
	if got := perms.Extensions[ExtensionLogin]; got != h.login {
		t.Errorf("login extension = %q, want %q", got, h.login)
	}
	if _, ok := perms.Extensions["permit-pty"]; !ok {
		t.Errorf("certificate extensions were not passed on: %v", perms.Extensions)
	}
	// The certificate's own map must not have been written to.
	if cert.Permissions.Extensions[ExtensionLogin] != "spoofed" {
		t.Errorf("authenticate modified the certificate's extensions")
	}
}

// TestLoginMapping runs a command as another user when the agent is root.
func TestLoginMapping(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mapping logins to other users needs root")
	}
	other := userWithShell(t)
	h := newHarness(t)
	key := h.writeKey("other", &certSpec{principals: []string{other.name}})
	res := h.run(nil, "ssh", h.sshArgs(key, other.name, nil, `id -u; id -g; echo "$HOME $USER"; pwd`)...)
	want := strconv.Itoa(int(other.uid)) + "\n" + strconv.Itoa(int(other.gid)) + "\n" + other.home + " " + other.name + "\n" + other.workDir() + "\n"
	if res.code != 0 || res.stdout != want {
		t.Errorf("as %s: exit %d stdout %q stderr %q, want %q", other.name, res.code, res.stdout, res.stderr, want)
	}

	// In-process sftp would run as root: it must be refused for this login.
	c, err := h.dialGo(other.name, h.signer(&certSpec{principals: []string{other.name}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestSubsystem("sftp"); err == nil {
		t.Errorf("in-process sftp as %s was accepted, want refused", other.name)
	}
	h.waitLog(t, "set Config.SFTPCommand")
}

// userWithShell finds a user other than the current one whose shell runs
// commands (not nologin or false).
func userWithShell(t *testing.T) *account {
	t.Helper()
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Skipf("no /etc/passwd: %v", err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] == me.Username || f[2] == "0" {
			continue
		}
		if f[6] != "/bin/bash" && f[6] != "/bin/sh" {
			continue
		}
		a, err := lookupAccount(f[0])
		if err == nil {
			return a
		}
	}
	t.Skip("no other user with a shell on this machine")
	return nil
}

// TestHostCertIsChecked is a sanity check of the harness itself: a client
// that trusts another host CA must refuse the server.
func TestHostCertIsChecked(t *testing.T) {
	h := newHarness(t)
	other := newSigner(t)
	line := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(other.PublicKey()))
	if err := os.WriteFile(h.known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := h.ssh(nil, nil, "true"); res.code != 255 {
		t.Errorf("ssh trusting a foreign host CA: exit %d, want 255", res.code)
	}
}
