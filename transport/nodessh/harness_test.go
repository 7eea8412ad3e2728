package nodessh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sftpServerArg makes the test binary act as an sftp server on stdin/stdout,
// as `warren sftp-server` does, so Config.SFTPCommand and ServeSFTP are
// tested with a real child process.
const sftpServerArg = "nodessh-sftp-server"

func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == sftpServerArg {
		rw := struct {
			io.Reader
			io.Writer
			io.Closer
		}{os.Stdin, os.Stdout, os.Stdout}
		if err := ServeSFTP(rw); err != nil {
			fmt.Fprintln(os.Stderr, "sftp server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// cmdTimeout bounds every client process, so a bug fails a test instead of
// hanging it.
const cmdTimeout = 90 * time.Second

func requireBinaries(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed: %v", n, err)
		}
	}
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// logBuffer collects the server's logs for assertions.
type logBuffer struct {
	mu      sync.Mutex // guards the fields below
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced by every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the log satisfies cond. Some lines are written just
// after the server hung up on a client (x/crypto closes the conn before
// returning a handshake error), so a client's exit does not order them.
func (b *logBuffer) waitFor(t *testing.T, what string, cond func(log string) bool) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		log, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		if cond(log) {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Errorf("server log never showed %s:\n%s", what, log)
			return
		}
	}
}

// waitLog waits until the server log contains want.
func (h *harness) waitLog(t *testing.T, want string) {
	t.Helper()
	h.logs.waitFor(t, fmt.Sprintf("%q", want), func(log string) bool { return strings.Contains(log, want) })
}

// certSpec describes a user certificate to issue; zero fields get the
// defaults of a good certificate for the harness login.
type certSpec struct {
	principals  []string
	validAfter  time.Time
	validBefore time.Time
	ca          ssh.Signer // nil = the harness user CA
	certType    uint32     // 0 = ssh.UserCert
	extensions  map[string]string
	critical    map[string]string
	noPTY       bool
}

// harness is a running Server with a user CA, a host CA and OpenSSH client
// configuration that trusts the host CA.
type harness struct {
	t      *testing.T
	dir    string
	hostCA ssh.Signer
	userCA ssh.Signer
	srv    *Server
	port   string
	logs   *logBuffer
	login  string
	known  string // known_hosts with the @cert-authority line
	home   string // HOME of the client processes
	key    string // a good key; its certificate is key + "-cert.pub"
	now    time.Time
}

// harnessOption adjusts the Config before New, or the Server before it
// serves.
type harnessOption struct {
	config func(*Config)
	server func(*Server)
}

func withConfig(f func(*Config)) harnessOption { return harnessOption{config: f} }
func withServer(f func(*Server)) harnessOption { return harnessOption{server: f} }

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	requireBinaries(t, "ssh")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:      t,
		dir:    t.TempDir(),
		hostCA: newSigner(t),
		userCA: newSigner(t),
		logs:   newLogBuffer(),
		login:  u.Username,
		now:    time.Now(),
	}
	h.home = filepath.Join(h.dir, "clienthome")
	if err := os.Mkdir(h.home, 0o700); err != nil {
		t.Fatal(err)
	}

	hostKey := newSigner(t)
	hostCert := &ssh.Certificate{
		Key:             hostKey.PublicKey(),
		CertType:        ssh.HostCert,
		KeyId:           "node1",
		ValidPrincipals: []string{"node1"},
		ValidAfter:      uint64(h.now.Add(-time.Hour).Unix()),
		ValidBefore:     uint64(h.now.Add(24 * time.Hour).Unix()),
	}
	if err := hostCert.SignCert(rand.Reader, h.hostCA); err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewCertSigner(hostCert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	h.known = filepath.Join(h.dir, "known_hosts")
	line := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(h.hostCA.PublicKey()))
	if err := os.WriteFile(h.known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	h.key = h.writeKey("good", &certSpec{})

	cfg := Config{
		HostSigners: []ssh.Signer{hostSigner},
		UserCAs:     []ssh.PublicKey{h.userCA.PublicKey()},
		Logger:      slog.New(slog.NewTextHandler(io.MultiWriter(h.logs, testLogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		if o.config != nil {
			o.config(&cfg)
		}
	}
	h.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		if o.server != nil {
			o.server(h.srv)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, h.port, _ = net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		// ErrServerClosed if the test closed the server itself.
		if err := <-served; !errors.Is(err, context.Canceled) && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
		if err := h.srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkNoLeaks(t)
	})
	return h
}

// testLogWriter shows the server's logs with -v, attributed to the test.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Logf("server: %s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// issue signs a user certificate for pub according to spec.
func (h *harness) issue(pub ssh.PublicKey, spec *certSpec) *ssh.Certificate {
	h.t.Helper()
	c := &ssh.Certificate{
		Key:             pub,
		Serial:          uint64(mrand.Uint32()),
		CertType:        spec.certType,
		KeyId:           "alice@example.test",
		ValidPrincipals: spec.principals,
		ValidAfter:      uint64(spec.validAfter.Unix()),
		ValidBefore:     uint64(spec.validBefore.Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: spec.critical,
			Extensions:      map[string]string{"permit-pty": ""},
		},
	}
	if c.CertType == 0 {
		c.CertType = ssh.UserCert
	}
	if spec.principals == nil {
		c.ValidPrincipals = []string{h.login}
	}
	if spec.validAfter.IsZero() {
		c.ValidAfter = uint64(h.now.Add(-time.Hour).Unix())
	}
	if spec.validBefore.IsZero() {
		c.ValidBefore = uint64(h.now.Add(time.Hour).Unix())
	}
	if spec.noPTY {
		delete(c.Permissions.Extensions, "permit-pty")
	}
	for k, v := range spec.extensions {
		c.Permissions.Extensions[k] = v
	}
	ca := spec.ca
	if ca == nil {
		ca = h.userCA
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		h.t.Fatal(err)
	}
	return c
}

// writeKey writes a new user key as OpenSSH files: the private key at the
// returned path and, unless spec is nil, its certificate beside it as
// <key>-cert.pub, where ssh finds it by itself.
func (h *harness) writeKey(name string, spec *certSpec) string {
	h.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		h.t.Fatal(err)
	}
	path := filepath.Join(h.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if spec != nil {
		pub, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			h.t.Fatal(err)
		}
		cert := h.issue(pub, spec)
		if err := os.WriteFile(path+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	return path
}

// signer is an x/crypto client signer with a certificate from spec.
func (h *harness) signer(spec *certSpec) ssh.Signer {
	h.t.Helper()
	key := newSigner(h.t)
	s, err := ssh.NewCertSigner(h.issue(key.PublicKey(), spec), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// clientOpts are the options every OpenSSH client gets: trust only the
// host CA, identify the server as node1, never prompt, use only key.
func (h *harness) clientOpts(key string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + h.known,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "HostKeyAlias=node1",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=30",
		"-i", key,
	}
}

// sshArgs builds an ssh command line for login@server running command.
func (h *harness) sshArgs(key, login string, extra []string, command ...string) []string {
	args := append(h.clientOpts(key), "-p", h.port)
	args = append(args, extra...)
	args = append(args, login+"@127.0.0.1")
	return append(args, command...)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs a client binary to completion with stdin (nil = empty).
func (h *harness) run(stdin io.Reader, name string, args ...string) result {
	h.t.Helper()
	return h.runEnv(nil, stdin, name, args...)
}

// clientEnv is the environment of every client process, plus env.
func (h *harness) clientEnv(env ...string) []string {
	return append([]string{"HOME=" + h.home, "PATH=" + os.Getenv("PATH"), "TERM=vt100", "LANG=C"}, env...)
}

// runEnv is run with variables added to the client's environment.
func (h *harness) runEnv(env []string, stdin io.Reader, name string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = h.clientEnv(env...)
	cmd.Dir = h.dir
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	// The client writes into files, not pipes: a pipe needs a goroutine in
	// this process to drain it, and under CI load that goroutine once fell
	// more than WaitDelay behind a 16 MiB download.
	stdout, stderr := h.outputFile("stdout"), h.outputFile("stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	res := result{stdout: readOutput(h.t, stdout), stderr: readOutput(h.t, stderr)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.code = ee.ExitCode()
	default:
		h.t.Fatalf("%s %s: %v (ctx: %v)\nstderr: %s", name, strings.Join(args, " "), err, ctx.Err(), res.stderr)
	}
	return res
}

// outputFile is a fresh file in the test's directory for a client's
// output; it is closed when the test ends.
func (h *harness) outputFile(name string) *os.File {
	h.t.Helper()
	f, err := os.CreateTemp(h.dir, name+"-*")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { f.Close() })
	return f
}

// readOutput reads back what a finished client wrote into f.
func readOutput(t testing.TB, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ssh runs the ssh client as the harness login with the good key.
func (h *harness) ssh(stdin io.Reader, extra []string, command ...string) result {
	h.t.Helper()
	return h.run(stdin, "ssh", h.sshArgs(h.key, h.login, extra, command...)...)
}

// mustSSH runs command and fails the test unless it exits 0.
func (h *harness) mustSSH(command string) string {
	h.t.Helper()
	res := h.ssh(nil, nil, command)
	if res.code != 0 {
		h.t.Fatalf("ssh %q: exit %d, stderr: %s", command, res.code, res.stderr)
	}
	return res.stdout
}

// clientConfig is an x/crypto client configuration for login with signer
// that checks the host certificate against the host CA.
func (h *harness) clientConfig(login string, signer ssh.Signer) *ssh.ClientConfig {
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return bytes.Equal(auth.Marshal(), h.hostCA.PublicKey().Marshal())
		},
	}
	return &ssh.ClientConfig{
		User: login,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, remote net.Addr, key ssh.PublicKey) error {
			return checker.CheckHostKey("node1:22", remote, key)
		},
		Timeout: 30 * time.Second,
	}
}

// dialGo connects an x/crypto client over TCP.
func (h *harness) dialGo(login string, signer ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", h.port), h.clientConfig(login, signer))
}

func (h *harness) mustDialGo(spec *certSpec) *ssh.Client {
	h.t.Helper()
	c, err := h.dialGo(h.login, h.signer(spec))
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	// A watchdog, so a test blocked on a session that never ends fails
	// instead of hanging until the go test timeout.
	watchdog := time.AfterFunc(cmdTimeout, func() { c.Close() })
	h.t.Cleanup(func() {
		watchdog.Stop()
		c.Close()
	})
	return c
}

// randomFile writes size pseudo-random bytes and returns the path and the
// hex SHA-256.
func randomFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	src := mrand.NewChaCha8(seed)
	if _, err := io.CopyN(io.MultiWriter(f, hash), src, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hash.Sum(nil))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hash.Sum(nil))
}

// checkNoLeaks fails the test if goroutines of the server (its own code,
// x/crypto/ssh or pkg/sftp) outlive Close. A few of the libraries' own
// goroutines end just after the calls that stopped them return, and the
// runtime offers no event for a goroutine's end, so this polls.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines outlived Close:\n\n%s", len(leaks), strings.Join(leaks, "\n\n"))
			return
		}
		<-tick.C
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaks []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // this goroutine
		}
		if isServerGoroutine(g) {
			leaks = append(leaks, g)
		}
	}
	return leaks
}

func isServerGoroutine(stack string) bool {
	for _, line := range strings.Split(stack, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.Contains(line, "/transport/nodessh/") && !strings.Contains(line, "_test.go"):
			return true
		case strings.HasPrefix(line, "golang.org/x/crypto/ssh."),
			strings.HasPrefix(line, "github.com/pkg/sftp."):
			return true
		}
	}
	return false
}
