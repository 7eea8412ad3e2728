package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPinnedHostKeys: a client that takes no host certificates (here
// OpenSSH told to accept only plain ed25519, or only ECDSA, host keys, as
// paramiko, libssh2 and older clients do) reaches the proxy and an ssh
// resource with the pinned lines `warren known-hosts` writes; without them
// it is refused.
func TestPinnedHostKeys(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	pinned := filepath.Join(c.dir, "pinned_known_hosts")
	c.adminOK("known-hosts", "--write", pinned)
	text, _ := os.ReadFile(pinned)
	host, port, _ := net.SplitHostPort(c.user)
	for _, want := range []string{
		fmt.Sprintf("[%s]:%s ssh-ed25519 ", host, port), "node1 ssh-ed25519 ",
		fmt.Sprintf("[%s]:%s ecdsa-sha2-nistp256 ", host, port), "node1 ecdsa-sha2-nistp256 ",
	} {
		if !strings.Contains(string(text), want) {
			t.Fatalf("known-hosts output lacks %q:\n%s", want, text)
		}
	}
	cfg := func(known, alg string) string {
		p := filepath.Join(c.dir, "plain_"+alg+"_"+filepath.Base(known)+"_config")
		os.WriteFile(p, []byte(fmt.Sprintf(`Host proxy-1
    HostName %[1]s
    Port %[2]s
    User alice
Host node1
    ProxyJump proxy-1
    User %[3]s
Host *
    IdentityFile %[4]s/alice
    CertificateFile %[4]s/alice-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %[5]s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    HostKeyAlgorithms %[6]s
`, host, port, c.me, c.dir, known, alg)), 0o644)
		return p
	}
	for _, alg := range []string{"ssh-ed25519", "ecdsa-sha2-nistp256"} {
		if out := c.sshOK(cfg(pinned, alg), "node1", "echo", "pinned"); out != "pinned\n" {
			t.Fatalf("through pinned plain %s host keys: got %q", alg, out)
		}
		// The CA lines alone do not let such a client in.
		_, errs, code := sshRun(t, cfg(filepath.Join(c.dir, "known_hosts"), alg), "node1", "true")
		if code != 255 || !strings.Contains(errs, "Host key verification failed") {
			t.Fatalf("plain %s keys against CA-only known_hosts: code %d stderr %q, want a refusal", alg, code, errs)
		}
	}
}
