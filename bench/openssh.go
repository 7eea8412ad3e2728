package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/transport/pki"
)

// Cipher is the one cipher every SSH hop of every row uses: the OpenSSH
// client's, the bastions', the proxies' and the agent tunnels' (Warren's
// servers and clients follow the client's first choice they support).
const Cipher = "aes128-gcm@openssh.com"

// SshdPath finds the stock OpenSSH server.
func SshdPath() (string, error) {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		return p, nil
	}
	return "", errors.New("stock OpenSSH server (sshd) not found: install it with `apt-get install -y openssh-server` (the `make bench-…` targets do)")
}

// Sshd is one stock OpenSSH server on loopback. It trusts the cluster's
// user CA, so the bench user's certificate logs in as on Warren's own
// servers, and it forwards TCP, so it serves as a bastion too.
type Sshd struct {
	Name, Addr string
	Proc       *Proc
}

// openssh holds what the stock servers share: a host key and the user CA.
type openssh struct {
	dir     string
	sshd    string
	hostKey string
	hostPub string // known_hosts key text
	userCA  string // path of the CA's authorized_keys line
}

func newOpenSSH(dir string, userCALine string) (*openssh, error) {
	sshd, err := SshdPath()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// sshd running as root wants its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}
	o := &openssh{dir: dir, sshd: sshd, hostKey: filepath.Join(dir, "sshd_host_key"), userCA: filepath.Join(dir, "sshd_user_ca.pub")}
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.hostKey, keyPEM, 0o600); err != nil {
		return nil, err
	}
	o.hostPub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if err := os.WriteFile(o.userCA, []byte(userCALine+"\n"), 0o644); err != nil {
		return nil, err
	}
	return o, nil
}

// start runs one sshd listening on ip.
func (o *openssh) start(name, ip string, stop *cleanups) (*Sshd, error) {
	addr, err := harness.FreePort(ip)
	if err != nil {
		return nil, err
	}
	cfg, err := o.writeConfig(name, addr, "")
	if err != nil {
		return nil, err
	}
	p, err := startProc(name, filepath.Join(o.dir, name+".log"), o.sshd, "-D", "-e", "-f", cfg)
	if err != nil {
		return nil, err
	}
	stop.add(p.Stop)
	if err := harness.WaitListening(p, addr, 10*time.Second); err != nil {
		return nil, err
	}
	return &Sshd{Name: name, Addr: addr, Proc: p}, nil
}

// startChain starts the anchor's three stock sshd servers: a target on
// 127.0.2.1 and bastions b1 and b2 on 127.0.2.2-3, for `ssh -J b1,b2`.
func (o *openssh) startChain(stop *cleanups) (target, b1, b2 *Sshd, err error) {
	if target, err = o.start("sshd-target", "127.0.2.1", stop); err != nil {
		return nil, nil, nil, err
	}
	if b1, err = o.start("sshd-bastion-1", "127.0.2.2", stop); err != nil {
		return nil, nil, nil, err
	}
	if b2, err = o.start("sshd-bastion-2", "127.0.2.3", stop); err != nil {
		return nil, nil, nil, err
	}
	return target, b1, b2, nil
}

// writeConfig writes the config of sshd name listening on addr, with
// extra lines at the end, and returns its path.
func (o *openssh) writeConfig(name, addr, extra string) (string, error) {
	cfg := filepath.Join(o.dir, name+"_config")
	text := fmt.Sprintf(`ListenAddress %s
HostKey %s
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
TrustedUserCAKeys %s
AllowTcpForwarding yes
MaxStartups 500
MaxSessions 100
Ciphers %s
LogLevel ERROR
Subsystem sftp internal-sftp
%s`, addr, o.hostKey, o.userCA, Cipher, extra)
	return cfg, os.WriteFile(cfg, []byte(text), 0o644)
}

// clientHost is one Host block of an ssh_config.
type clientHost struct {
	Name, Addr, User string // Addr empty: the name travels as is (Warren resources)
}

// writeClientConfig writes an ssh_config for the stock client: the named
// hosts, then login, u's identity and known_hosts (to which it adds the
// stock servers' host key) and the cipher for all of them.
func writeClientConfig(path, login string, u UserFiles, o *openssh, hosts []clientHost) error {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "Host %s\n", h.Name)
		if h.Addr != "" {
			fmt.Fprintf(&b, "    HostName %s\n    Port %s\n", hostOf(h.Addr), portOf(h.Addr))
		}
		if h.User != "" {
			fmt.Fprintf(&b, "    User %s\n", h.User)
		}
	}
	fmt.Fprintf(&b, `Host *
    User %s
    IdentityFile %s
    CertificateFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    Ciphers %s
    ControlMaster no
    ControlPath none
    ConnectTimeout 15
    LogLevel ERROR
`, login, u.Key, u.Cert, u.KnownHosts, Cipher)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	// The stock servers' host key, for every name they are reached by.
	f, err := os.OpenFile(u.KnownHosts, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "* %s\n", o.hostPub)
	return errors.Join(err, f.Close())
}

func portOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:]
}

// sshClient runs the stock OpenSSH client with an ssh_config, in network
// namespace netns if set (a user host of the emulated WAN).
type sshClient struct {
	config string
	netns  string
}

func (c sshClient) command(ctx context.Context, args []string, remote string) *exec.Cmd {
	full := append(append([]string{"-F", c.config, "-T"}, args...), remote)
	if c.netns == "" {
		return exec.CommandContext(ctx, "ssh", full...)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.netns, "ssh"}, full...)...)
	// ip execs ssh, but a ProxyJump ssh, its child, may hold the output
	// pipes a moment after it is killed.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// startForward runs `ssh -N -L spec` with args (the host to forward
// through, after -J … where wanted) as a process of its own, output to
// log, until Stop: a local forward, as a user keeps one open.
func (c sshClient) startForward(log, spec string, args ...string) (*Proc, error) {
	full := append([]string{"-F", c.config, "-N", "-T", "-o", "ExitOnForwardFailure=yes", "-L", spec}, args...)
	cmd := harness.Command{Name: "ssh -L", Log: log, Bin: "ssh", Args: full}
	if c.netns != "" {
		cmd.Bin, cmd.Args = "ip", append([]string{"netns", "exec", c.netns, "ssh"}, full...)
	}
	return harness.Start(cmd)
}

// setup times one `ssh … true` from spawn to exit.
func (c sshClient) setup(ctx context.Context, args []string) (time.Duration, error) {
	cmd := c.command(ctx, args, "true")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("ssh %s true: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return time.Since(start), nil
}

// interactive is a running `ssh … cat`: one byte there and back measures
// a keystroke's round trip.
type interactive struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    io.ReadCloser
	stderr *strings.Builder
	buf    [1]byte
}

func (c sshClient) startInteractive(ctx context.Context, args []string) (*interactive, error) {
	cmd := c.command(ctx, args, "cat")
	s := &interactive{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = s.stderr
	var err error
	if s.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if s.out, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// The first round trip also waits for the session to open.
	if _, err := s.roundTrip(); err != nil {
		s.close()
		return nil, fmt.Errorf("ssh %s cat: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(s.stderr.String()))
	}
	return s, nil
}

func (s *interactive) roundTrip() (time.Duration, error) {
	s.buf[0] = 'k'
	start := time.Now()
	if _, err := s.in.Write(s.buf[:]); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(s.out, s.buf[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// roundTrips measures n round trips.
func (s *interactive) roundTrips(n int) (Durations, error) {
	out := make(Durations, 0, n)
	for range n {
		d, err := s.roundTrip()
		if err != nil {
			return out, fmt.Errorf("round trip: %v: %s", err, strings.TrimSpace(s.stderr.String()))
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *interactive) close() error {
	s.in.Close()
	err := s.cmd.Wait()
	return err
}

// bulk is a running upload: `ssh … 'echo ready; cat >/dev/null'` fed
// from a buffer of random bytes.
type bulk struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	stderr *strings.Builder
}

func (c sshClient) startBulk(ctx context.Context, args []string) (*bulk, error) {
	cmd := c.command(ctx, args, "echo ready; exec cat >/dev/null")
	b := &bulk{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = b.stderr
	var err error
	if b.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		b.in.Close()
		b.cmd.Wait()
		return nil, fmt.Errorf("ssh %s: no ready line (%q, %v): %s", strings.Join(args, " "), line, err, strings.TrimSpace(b.stderr.String()))
	}
	return b, nil
}

// send writes n bytes (or until stop is closed) and returns how many.
func (b *bulk) send(n int64, block []byte, stop <-chan struct{}) (int64, error) {
	var sent int64
	for n <= 0 || sent < n {
		select {
		case <-stop:
			return sent, nil
		default:
		}
		chunk := block
		if n > 0 && int64(len(chunk)) > n-sent {
			chunk = chunk[:n-sent]
		}
		w, err := b.in.Write(chunk)
		sent += int64(w)
		if err != nil {
			return sent, fmt.Errorf("upload: %v: %s", err, strings.TrimSpace(b.stderr.String()))
		}
	}
	return sent, nil
}

// finish closes the upload and waits until the far end has read it all
// (the remote cat exits, then ssh).
func (b *bulk) finish() error {
	b.in.Close()
	if err := b.cmd.Wait(); err != nil {
		return fmt.Errorf("upload: %v: %s", err, strings.TrimSpace(b.stderr.String()))
	}
	return nil
}

// upload times n bytes from the first write until ssh exits.
func (c sshClient) upload(ctx context.Context, args []string, n int64, block []byte) (time.Duration, error) {
	b, err := c.startBulk(ctx, args)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := b.send(n, block, nil); err != nil {
		b.in.Close()
		b.cmd.Wait()
		return 0, err
	}
	if err := b.finish(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
