package peer

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/warren-proxy/warren/transport/pki"
)

// The protoactor tests run each actor system in its own process, a copy of
// the test binary started by startRemoteProcess, as proxies run. Besides
// being the real shape, that is needed under the race detector:
// remote.Remote.Start replaces gRPC's global logger without
// synchronisation, which races with any gRPC goroutine already running in
// the process (another Remote's server, earlier tests' connections).

const (
	helperEnv    = "WARREN_PEER_TEST_REMOTE" // proxy id of the helper process
	helperDirEnv = "WARREN_PEER_TEST_DIR"    // where its certificate and the CA are
	// helperDenied is refused by the helpers' AllowPeer.
	helperDenied = "proxy-not-member"
)

// runRemoteHelper is the helper process: protoactor remote on 127.0.0.1:0
// with ServerOptions and DialOptions, an echo actor named "echo", and the
// echo data-stream handler for token "s". It prints "addr ADDR", then
// answers lines "ask ADDR TEXT" on stdin by asking the echo actor at ADDR
// over remote and printing "reply TEXT" or "error ERR". It stops when stdin
// closes.
func runRemoteHelper(name string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "remote helper:", err)
		return 2
	}
	dir := os.Getenv(helperDirEnv)
	certPEM, err1 := os.ReadFile(filepath.Join(dir, name+".crt"))
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, name+".key"))
	caPEM, err3 := os.ReadFile(filepath.Join(dir, pki.FileTLSCACert))
	if err := errors.Join(err1, err2, err3); err != nil {
		return fail(err)
	}
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM(caPEM)
	id, err := NewIdentity(certPEM, keyPEM, cas)
	if err != nil {
		return fail(err)
	}
	opts, err := ServerOptions(ServerConfig{
		Identity:  id,
		Handler:   echoHandler("s"),
		AllowPeer: func(id string) bool { return id != helperDenied },
	})
	if err != nil {
		return fail(err)
	}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	r := remote.NewRemote(system, remote.Configure("127.0.0.1", 0,
		remote.WithServerOptions(opts...),
		remote.WithDialOptions(DialOptions(id)...)))
	r.Start()
	defer func() {
		r.Shutdown(false)
		system.Shutdown()
	}()
	_, err = system.Root.SpawnNamed(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*wrapperspb.StringValue); ok {
			c.Respond(wrapperspb.String(name + " echoes " + m.Value))
		}
	}), "echo")
	if err != nil {
		return fail(err)
	}
	fmt.Println("addr", system.Address())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.SplitN(in.Text(), " ", 3)
		if len(f) != 3 || f[0] != "ask" {
			fmt.Println("error bad command")
			continue
		}
		res, err := system.Root.RequestFuture(actor.NewPID(f[1], "echo"), wrapperspb.String(f[2]), 20*time.Second).Result()
		switch m, ok := res.(*wrapperspb.StringValue); {
		case err != nil:
			fmt.Println("error", err)
		case !ok:
			fmt.Printf("error reply of type %T\n", res)
		default:
			fmt.Println("reply", m.Value)
		}
	}
	return 0
}

// remoteProcess is a running helper.
type remoteProcess struct {
	addr   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr *bytes.Buffer
	exited chan struct{} // closed when the process is gone
}

// startRemoteProcess starts a helper with the identity id from ca. It is
// stopped in t.Cleanup, and must have exited cleanly (a data race in it
// would make it exit 66).
func startRemoteProcess(t *testing.T, ca *pki.Authority, id string) *remoteProcess {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := ca.IssueTLSCert(id, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(ca.Dir, pki.FileTLSCACert))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{id + ".crt": certPEM, id + ".key": keyPEM, pki.FileTLSCACert: caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+id, helperDirEnv+"="+dir)
	p := &remoteProcess{cmd: cmd, stderr: new(bytes.Buffer), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	var once sync.Once
	go func() {
		waitErr = cmd.Wait()
		close(p.exited)
	}()
	stop := func() {
		once.Do(func() {
			p.stdin.Close()
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-p.exited
			}
			if waitErr != nil {
				t.Errorf("remote helper %s: %v; stderr:\n%s", id, waitErr, p.stderr)
			}
		})
	}
	t.Cleanup(stop)
	p.out = bufio.NewScanner(stdout)
	line := p.readLine(t)
	if !strings.HasPrefix(line, "addr ") {
		t.Fatalf("remote helper %s: got %q, want its address; stderr:\n%s", id, line, p.stderr)
	}
	p.addr = strings.TrimPrefix(line, "addr ")
	return p
}

func (p *remoteProcess) readLine(t *testing.T) string {
	t.Helper()
	if !p.out.Scan() {
		t.Fatalf("remote helper ended its output (%v); stderr:\n%s", p.out.Err(), p.stderr)
	}
	return p.out.Text()
}

// ask makes p ask the echo actor at addr over protoactor remote.
func (p *remoteProcess) ask(t *testing.T, addr, text string) string {
	t.Helper()
	if _, err := fmt.Fprintf(p.stdin, "ask %s %s\n", addr, text); err != nil {
		t.Fatal(err)
	}
	return p.readLine(t)
}

func (p *remoteProcess) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// TestProtoactorRemote runs the peer server inside protoactor remote's own
// gRPC server: the guard turns the unary calls that would panic into
// Unimplemented, actor messages still flow between two systems over mutual
// TLS afterwards, and data streams share the port.
func TestProtoactorRemote(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	ca := newCA(t)
	a := startRemoteProcess(t, ca, "proxy-a")
	b := startRemoteProcess(t, ca, "proxy-b")
	client := newIdentity(t, ca, "proxy-c")

	// The guard, called as any proxy of the cluster could.
	cc, err := grpc.NewClient("passthrough:///"+a.addr, DialOptions(client)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rc := remote.NewRemotingClient(cc)
	for i := range 3 {
		_, err := rc.ListProcesses(ctxT(t), &remote.ListProcessesRequest{Pattern: "*"})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("ListProcesses %d: got %v, want code Unimplemented", i, err)
		}
		if i == 0 {
			t.Logf("ListProcesses: %v", err)
		}
		_, err = rc.GetProcessDiagnostics(ctxT(t), &remote.GetProcessDiagnosticsRequest{Pid: actor.NewPID(a.addr, "echo")})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("GetProcessDiagnostics %d: got %v, want code Unimplemented", i, err)
		}
	}

	// Without a client certificate nothing is reached at all.
	anon, err := grpc.NewClient("passthrough:///"+a.addr, DialOptions(Identity{CAs: ca.TLSCertPool()})...)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	_, err = remote.NewRemotingClient(anon).ListProcesses(ctxT(t), &remote.ListProcessesRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("ListProcesses without a client certificate: got %v, want Unavailable: certificate required", err)
	}

	// A proxy that AllowPeer refuses cannot open protoactor's stream.
	denied, err := grpc.NewClient("passthrough:///"+a.addr, DialOptions(newIdentity(t, ca, helperDenied))...)
	if err != nil {
		t.Fatal(err)
	}
	defer denied.Close()
	recv, err := remote.NewRemotingClient(denied).Receive(ctxT(t))
	if err == nil {
		_, err = recv.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("protoactor Receive from a non-member: got %v, want PermissionDenied", err)
	}

	// Process A lives on and serves actor messages: B asks A's echo actor
	// (B→A and the reply A→B both over mutual TLS), and A asks B's.
	if !a.alive() {
		t.Fatalf("remote A died; stderr:\n%s", a.stderr)
	}
	for _, tc := range []struct {
		from *remoteProcess
		to   string
		want string
	}{
		{b, a.addr, "reply proxy-a echoes hello"},
		{b, a.addr, "reply proxy-a echoes again"},
		{a, b.addr, "reply proxy-b echoes back"},
	} {
		text := strings.Fields(tc.want)[3]
		if got := tc.from.ask(t, tc.to, text); got != tc.want {
			t.Fatalf("actor request over remote: got %q, want %q", got, tc.want)
		}
	}

	// Data streams on the same port, through the unknown-service handler
	// and the same interceptors.
	d := newDialer(t, client)
	checkEcho(t, mustOpen(t, d, a.addr, "s"), echoSize(), 11)
	if _, err := d.Open(ctxT(t), a.addr, "nope"); err == nil || !strings.Contains(err.Error(), `unknown session token "nope"`) {
		t.Errorf("Open with an unknown token: got %v, want a refusal naming the token", err)
	}
	if _, err := newDialer(t, newIdentity(t, ca, helperDenied)).Open(ctxT(t), a.addr, "s"); !errors.Is(err, ErrRefused) {
		t.Errorf("Open from a non-member: got %v, want a refusal", err)
	}
	if got := b.ask(t, a.addr, "last"); got != "reply proxy-a echoes last" {
		t.Fatalf("actor request after the data stream: got %q", got)
	}
}
