// Package usersh is the proxy's SSH server for users: a jump host.
//
// Users authenticate with a user certificate from the cluster user CA. A
// "direct-tcpip" channel (what `ssh -J`, `ssh -W` and `ssh -L` send) names
// a resource as its host; the server hands it to the Handler, which owns
// the channel from then on. A "session" channel runs one proxy command
// (`ssh -p 3023 alice@proxy ls`) through the Handler; a shell gets a short
// help text. Nothing else is allowed.
package usersh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Extension names in user certificates (see transport/pki).
const (
	extUser  = "warren-user@warren.dev"
	extRoles = "warren-roles@warren.dev"
)

// Identity is who is on a connection, from their certificate.
type Identity struct {
	User       string
	Roles      []string
	Logins     []string
	KeyID      string
	Serial     uint64
	ValidUntil time.Time
}

// HasRole reports whether the identity holds role.
func (id Identity) HasRole(role string) bool {
	for _, r := range id.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Target is the destination of a direct-tcpip channel.
type Target struct {
	Host string
	Port uint32
}

// Handler serves what users ask for.
type Handler interface {
	// DirectTCPIP owns nch: it must Accept or Reject it.
	DirectTCPIP(ctx context.Context, conn *Conn, target Target, nch ssh.NewChannel)
	// Command runs a proxy command and returns its exit status; stdin is
	// what the user sends (for example a resource definition).
	Command(ctx context.Context, conn *Conn, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// Config configures a Server.
type Config struct {
	HostSigners      []ssh.Signer
	UserCAs          []ssh.PublicKey
	Handler          Handler
	HandshakeTimeout time.Duration // default 10s
	Clock            func() time.Time
	Logger           *slog.Logger
	// Help is printed to a user who asks for a shell on the proxy.
	Help string
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.HostSigners) == 0 {
		errs = append(errs, errors.New("HostSigners: at least one host key is required"))
	}
	if len(c.UserCAs) == 0 {
		errs = append(errs, errors.New("UserCAs: at least one user CA is required"))
	}
	if c.Handler == nil {
		errs = append(errs, errors.New("Handler is required"))
	}
	return errors.Join(errs...)
}

// Server is the user-facing SSH server.
type Server struct {
	cfg Config
	ssh *ssh.ServerConfig

	wg     sync.WaitGroup // every connection goroutine
	mu     sync.Mutex     // guards the fields below
	ln     map[net.Listener]bool
	hs     map[net.Conn]bool // connections still in their handshake
	cs     map[*Conn]bool
	closed bool
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("user ssh config: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, ln: map[net.Listener]bool{}, hs: map[net.Conn]bool{}, cs: map[*Conn]bool{}}
	sc := &ssh.ServerConfig{
		PublicKeyCallback: s.authenticate,
		ServerVersion:     "SSH-2.0-warren-proxy",
		MaxAuthTries:      6,
	}
	for _, h := range cfg.HostSigners {
		sc.AddHostKey(h)
	}
	s.ssh = sc
	return s, nil
}

const (
	permUser   = "warren-user"
	permRoles  = "warren-roles"
	permKeyID  = "warren-key-id"
	permLogins = "warren-logins"
	permSerial = "warren-serial"
	permUntil  = "warren-until"
)

// authenticate accepts user certificates from the user CA. The SSH user
// name must be the Warren user name or one of the certificate's logins.
func (s *Server) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		// Clients offer plain keys before certificates; a banner here
		// would be noise, the final message below is what users see.
		return nil, errors.New("not a certificate")
	}
	fail := func(msg string) (*ssh.Permissions, error) {
		s.cfg.Logger.Warn("user auth refused", "user", meta.User(), "key_id", cert.KeyId, "remote", meta.RemoteAddr().String(), "reason", msg)
		return nil, &ssh.BannerError{Err: errors.New(msg), Message: "warren: " + msg + "\n"}
	}
	if cert.CertType != ssh.UserCert {
		return fail("a host certificate cannot log in as a user")
	}
	trusted := false
	for _, ca := range s.cfg.UserCAs {
		if bytes.Equal(ca.Marshal(), cert.SignatureKey.Marshal()) {
			trusted = true
		}
	}
	if !trusted {
		return fail("your certificate is not signed by this cluster's user CA; get one with `warren user add`")
	}
	now := s.cfg.Clock()
	if after := time.Unix(int64(cert.ValidAfter), 0); cert.ValidAfter != 0 && now.Before(after) {
		return fail(fmt.Sprintf("your certificate is not valid before %s", after.UTC().Format(time.RFC3339)))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity {
		if until := time.Unix(int64(cert.ValidBefore), 0); !now.Before(until) {
			return fail(fmt.Sprintf("your certificate expired at %s; get a new one with `warren user add`", until.UTC().Format(time.RFC3339)))
		}
	}
	user, roles := cert.Permissions.Extensions[extUser], cert.Permissions.Extensions[extRoles]
	if user == "" {
		user = cert.KeyId
	}
	if meta.User() != user && !contains(cert.ValidPrincipals, meta.User()) {
		return fail(fmt.Sprintf("log in to the proxy as %q (your user name), not %q", user, meta.User()))
	}
	principal := meta.User()
	if !contains(cert.ValidPrincipals, principal) && len(cert.ValidPrincipals) > 0 {
		principal = cert.ValidPrincipals[0]
	}
	checker := ssh.CertChecker{Clock: s.cfg.Clock}
	if err := checker.CheckCert(principal, cert); err != nil {
		return fail("certificate rejected: " + err.Error())
	}
	return &ssh.Permissions{Extensions: map[string]string{
		permUser:   user,
		permRoles:  roles,
		permKeyID:  cert.KeyId,
		permLogins: strings.Join(cert.ValidPrincipals, ","),
		permSerial: fmt.Sprint(cert.Serial),
		permUntil:  fmt.Sprint(cert.ValidBefore),
	}}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Serve accepts connections on ln until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.ln[ln] = true
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept user connection: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.hs[nc] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// Close stops every listener and connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.ln {
		ln.Close()
	}
	for nc := range s.hs {
		nc.Close()
	}
	for c := range s.cs {
		c.ssh.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conn is one authenticated user connection.
type Conn struct {
	ID         string
	Identity   Identity
	RemoteAddr net.Addr
	ssh        *ssh.ServerConn

	mu     sync.Mutex        // guards sticky
	sticky map[string]string // resource → agent id this connection uses
}

// StickyAgent returns the agent this connection's earlier channels to
// resource went to, if any: every channel of one connection to one
// resource goes to the same agent (scp after ssh, ControlMaster).
func (c *Conn) StickyAgent(resource string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sticky[resource]
}

// SetStickyAgent records the agent a channel to resource went to.
func (c *Conn) SetStickyAgent(resource, agentID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sticky == nil {
		c.sticky = map[string]string{}
	}
	c.sticky[resource] = agentID
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(nc, s.ssh)
	s.mu.Lock()
	delete(s.hs, nc)
	s.mu.Unlock()
	if err != nil {
		s.cfg.Logger.Info("user handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	ext := sconn.Permissions.Extensions
	c := &Conn{ID: newID(), RemoteAddr: sconn.RemoteAddr(), ssh: sconn, Identity: identityFrom(ext)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sconn.Close()
		return
	}
	s.cs[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.cs, c)
		s.mu.Unlock()
		sconn.Close()
	}()
	s.cfg.Logger.Info("user connected", "user", c.Identity.User, "conn", c.ID, "remote", c.RemoteAddr.String())

	// Handlers are waited for after their context is cancelled (defers
	// run last-in first-out), so a handler blocked on ctx ends when the
	// user goes away.
	var wg sync.WaitGroup
	defer wg.Wait()
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(connCtx, func() { sconn.Close() })
	defer stop()
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		switch nch.ChannelType() {
		case "direct-tcpip":
			var p struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}
			if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
				_ = nch.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.cfg.Handler.DirectTCPIP(connCtx, c, Target{Host: p.Host, Port: p.Port}, nch)
			}()
		case "session":
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveSession(connCtx, c, nch)
			}()
		default:
			_ = nch.Reject(ssh.UnknownChannelType, fmt.Sprintf("the proxy does not serve %q channels", nch.ChannelType()))
		}
	}
	s.cfg.Logger.Info("user disconnected", "user", c.Identity.User, "conn", c.ID)
}

func identityFrom(ext map[string]string) Identity {
	id := Identity{User: ext[permUser], KeyID: ext[permKeyID]}
	if r := ext[permRoles]; r != "" {
		id.Roles = strings.Split(r, ",")
	}
	if l := ext[permLogins]; l != "" {
		id.Logins = strings.Split(l, ",")
	}
	fmt.Sscan(ext[permSerial], &id.Serial)
	var until uint64
	fmt.Sscan(ext[permUntil], &until)
	if until != 0 && until != ssh.CertTimeInfinity {
		id.ValidUntil = time.Unix(int64(until), 0)
	}
	return id
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
