package nodessh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sendEnv is a client environment of n variables WARREN_T_000... and the
// ssh options that send them.
func sendEnv(n int) (env, opts []string) {
	for i := range n {
		env = append(env, fmt.Sprintf("WARREN_T_%03d=value-%d", i, i))
	}
	return env, []string{"-o", "SendEnv=WARREN_T_*"}
}

// TestOpenSSHSendEnv sends variables with SendEnv as sshd takes them: 100
// of them, and a large one, arrive; past the limits the rest are refused,
// logged, and named on the session's stderr.
func TestOpenSSHSendEnv(t *testing.T) {
	h := newHarness(t)

	t.Run("100 variables", func(t *testing.T) {
		env, opts := sendEnv(100)
		res := h.ssh2(h.key, env, opts, `env | grep -c '^WARREN_T_'; echo "$WARREN_T_000 $WARREN_T_099"`)
		if res.code != 0 || res.stdout != "100\nvalue-0 value-99\n" || res.stderr != "" {
			t.Errorf("exit %d stdout %q stderr %q, want 100 variables and no complaint", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("a large variable", func(t *testing.T) {
		big := strings.Repeat("x", 100<<10)
		res := h.ssh2(h.key, []string{"WARREN_BIG=" + big}, []string{"-o", "SendEnv=WARREN_BIG"}, `printf %s "$WARREN_BIG" | wc -c`)
		if res.code != 0 || strings.TrimSpace(res.stdout) != fmt.Sprint(len(big)) {
			t.Errorf("exit %d stdout %q stderr %q, want %d bytes", res.code, res.stdout, res.stderr, len(big))
		}
	})

	t.Run("past the limit", func(t *testing.T) {
		env, opts := sendEnv(maxEnvVars + 2)
		res := h.ssh2(h.key, env, opts, `env | grep -c '^WARREN_T_'`)
		if res.code != 0 || res.stdout != fmt.Sprintf("%d\n", maxEnvVars) {
			t.Errorf("exit %d stdout %q, want %d variables", res.code, res.stdout, maxEnvVars)
		}
		want := fmt.Sprintf("warren: 2 environment variables not set (at most %d variables", maxEnvVars)
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr %q, want %q", res.stderr, want)
		}
		h.waitLog(t, fmt.Sprintf(`reason="more than %d variables"`, maxEnvVars))
	})
}

// TestEnvVariableTooLarge sends, with the Go client, a variable larger
// than execve takes, which OpenSSH's client cannot even be started with.
func TestEnvVariableTooLarge(t *testing.T) {
	h := newHarness(t)
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.Setenv("WARREN_HUGE", strings.Repeat("y", maxEnvVarBytes)); err == nil {
		t.Errorf("a variable of %d bytes was accepted", maxEnvVarBytes+len("WARREN_HUGE="))
	}
	if err := sess.Setenv("WARREN_SMALL", "ok"); err != nil {
		t.Errorf("a small variable after it was refused: %v", err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	out, err := sess.Output(`echo "${WARREN_HUGE-unset} $WARREN_SMALL"`)
	if err != nil || string(out) != "unset ok\n" {
		t.Errorf("Output = %q, %v; want %q", out, err, "unset ok\n")
	}
	if want := "warren: 1 environment variable not set"; !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "WARREN_HUGE") {
		t.Errorf("stderr %q, want %q naming WARREN_HUGE", stderr.String(), want)
	}
}

// TestOpenSSHConnectionEnv checks SSH_CONNECTION and SSH_CLIENT against
// the client's and the server's TCP addresses.
func TestOpenSSHConnectionEnv(t *testing.T) {
	h := newHarness(t)
	got := strings.TrimSpace(h.mustSSH(`echo "$SSH_CONNECTION|$SSH_CLIENT"`))
	conn, client, ok := strings.Cut(got, "|")
	cf, cl := strings.Fields(conn), strings.Fields(client)
	if !ok || len(cf) != 4 || len(cl) != 3 {
		t.Fatalf("SSH_CONNECTION|SSH_CLIENT = %q, want 4 and 3 fields", got)
	}
	if cf[0] != "127.0.0.1" || cf[2] != "127.0.0.1" || cf[3] != h.port || cf[1] == "0" {
		t.Errorf("SSH_CONNECTION = %q, want 127.0.0.1 <client port> 127.0.0.1 %s", conn, h.port)
	}
	if cl[0] != cf[0] || cl[1] != cf[1] || cl[2] != cf[3] {
		t.Errorf("SSH_CLIENT = %q, want %q", client, strings.Join([]string{cf[0], cf[1], cf[3]}, " "))
	}
}

// addrConn is a conn that reports other addresses, as the agent's tunnel
// adapter reports the user's client address as the proxy saw it.
type addrConn struct {
	net.Conn
	remote, local net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }
func (c addrConn) LocalAddr() net.Addr  { return c.local }

// TestServeConnAddresses serves a conn whose addresses are the proxy's
// view of the user: SSH_CONNECTION and SSH_CLIENT carry them.
func TestServeConnAddresses(t *testing.T) {
	h := newHarness(t)
	srvSide, cliSide := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	conn := addrConn{
		Conn:   srvSide,
		remote: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 54321},
		local:  &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 22},
	}
	go func() { served <- h.srv.ServeConn(ctx, conn) }()

	cc, chans, reqs, err := ssh.NewClientConn(cliSide, "node1:22", h.clientConfig(h.login, h.signer(&certSpec{})))
	if err != nil {
		t.Fatal(err)
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(`echo "$SSH_CONNECTION|$SSH_CLIENT"`)
	if want := "203.0.113.7 54321 10.1.2.3 22|203.0.113.7 54321 22\n"; err != nil || string(out) != want {
		t.Errorf("Output = %q, %v; want %q", out, err, want)
	}
	cancel()
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Errorf("ServeConn = %v, want context.Canceled", err)
	}
}
