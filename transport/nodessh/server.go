package nodessh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/accept"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
)

const (
	// handshakeTimeout bounds the key exchange and authentication, so a
	// client that connects and says nothing does not hold a connection.
	handshakeTimeout = 30 * time.Second
	// maxSessionsPerConn bounds the session channels one connection may hold
	// open at once (OpenSSH's MaxSessions is 10; multiplexing clients such as
	// ControlMaster want a few more).
	maxSessionsPerConn = 32
	// forceCommandOption is the certificate critical option that replaces
	// whatever the client asks to run.
	forceCommandOption = "force-command"
	// permitPTYExtension is the certificate extension without which a PTY
	// is refused, as in OpenSSH.
	permitPTYExtension = "permit-pty"
	// serverVersion starts with "OpenSSH" because OpenSSH's client keys
	// protocol extensions on the server's software version: it sends
	// eow@openssh.com (see session.onEOW) only to a server whose version
	// matches "OpenSSH*" (compat.c, SSH_NEW_OPENSSH), and without eow
	// `ssh node yes | head -1` never ends. No number follows, so nothing
	// that reads the banner mistakes the server for a given OpenSSH
	// release; the flag also makes the client send
	// no-more-sessions@openssh.com, which is ignored (it wants no reply).
	serverVersion = "SSH-2.0-OpenSSH_Warren"
)

// Server is an SSH server for one node. Create it with New; it is safe for
// concurrent use.
type Server struct {
	cfg    Config // private copy; the caller's slices are never kept
	log    *slog.Logger
	sshCfg *ssh.ServerConfig
	self   *account // the user this process runs as
	root   bool     // whether children can be run as other users

	handshakeTimeout time.Duration // handshakeTimeout, or shorter in tests

	closing chan struct{} // closed by Close; every connection watches it
	wg      sync.WaitGroup

	mu     sync.Mutex // guards closed, conns and the wg.Add calls that depend on closed
	closed bool
	conns  map[*connection]struct{} // logged-in connections, for Evict
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.HostSigners = slices.Clone(cfg.HostSigners)
	cfg.UserCAs = slices.Clone(cfg.UserCAs)
	cfg.SFTPCommand = slices.Clone(cfg.SFTPCommand)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	self, err := currentAccount()
	if err != nil {
		return nil, fmt.Errorf("nodessh: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		self:    self,
		root:    os.Geteuid() == 0,
		closing: make(chan struct{}),

		handshakeTimeout: handshakeTimeout,
	}
	s.sshCfg = &ssh.ServerConfig{
		PublicKeyCallback: func(m ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) { return s.authenticate(nil, m, k) },
		ServerVersion:     serverVersion,
	}
	if cfg.Banner != "" {
		banner := cfg.Banner
		s.sshCfg.BannerCallback = func(ssh.ConnMetadata) string { return banner }
	}
	for _, hs := range cfg.HostSigners {
		s.sshCfg.AddHostKey(hs)
	}
	return s, nil
}

// authenticate accepts only user certificates that pass pki's one check
// (from the configured CAs, with the login among their principals,
// force-command enforced by sessions and source-address by the check), and
// only logins this process can serve.
// Every refusal carries the user, key id and reason into the log; key
// material never goes there.
func (s *Server) authenticate(conn net.Conn, meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	login := meta.User()
	log := s.log.With("remote", addrString(meta.RemoteAddr()), "user", login)
	cert, isCert := key.(*ssh.Certificate)
	if isCert {
		log = log.With("key_id", cert.KeyId, "serial", cert.Serial)
	}
	// OpenSSH clients offer the bare key before its certificate, so a
	// rejected key is routine: log it quietly, and let the error carry the
	// reason into the one line logged if the whole authentication fails.
	reject := func(reason string) (*ssh.Permissions, error) {
		log.Debug("ssh key rejected", "reason", reason)
		if !isCert {
			return nil, fmt.Errorf("user %q, %s key: %s", login, key.Type(), reason)
		}
		return nil, fmt.Errorf("user %q, certificate %q (serial %d): %s", login, cert.KeyId, cert.Serial, reason)
	}
	_, err := pki.CheckUserCert(key, pki.CertOptions{
		Authorities:     s.cfg.UserCAs,
		Now:             s.cfg.Clock(),
		Principal:       login,
		CriticalOptions: []string{forceCommandOption},
		ClientAddr:      meta.RemoteAddr(),
	})
	switch {
	case errors.Is(err, pki.ErrNotCertificate):
		return reject("plain public keys are not accepted; use a user certificate from the cluster's user CA")
	case errors.Is(err, pki.ErrPrincipal):
		// Told to the user too: which logins they do have.
		_, rerr := reject(fmt.Sprintf("login %q is not a principal of the certificate", login))
		return nil, &ssh.BannerError{Err: rerr, Message: "warren: your " + err.Error() + "\n"}
	case err != nil:
		return reject(err.Error())
	}
	perms := &cert.Permissions
	if !s.root && login != s.self.name {
		_, err := reject(fmt.Sprintf("agent runs as %s; cannot log in as %s", s.self.name, login))
		return nil, &ssh.BannerError{Err: err, Message: fmt.Sprintf("warren: this node's agent runs as %s and can serve only that login\n", s.self.name)}
	}
	if s.root {
		if _, err := lookupAccount(login); err != nil {
			_, err := reject(fmt.Sprintf("no such user %q on this node", login))
			return nil, &ssh.BannerError{Err: err, Message: fmt.Sprintf("warren: there is no user %s on this node\n", model.Quote(login))}
		}
	}
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(conn, login, cert); err != nil {
			log.Info("ssh login refused by the cluster's roles", "reason", err)
			return nil, &ssh.BannerError{Err: err, Message: "warren: " + err.Error() + "\n"}
		}
	}
	// Copy: perms points into the certificate.
	out := &ssh.Permissions{
		CriticalOptions: make(map[string]string, len(perms.CriticalOptions)),
		Extensions:      make(map[string]string, len(perms.Extensions)+2),
		// The certificate goes to Config.AllowForwarding later.
		ExtraData: map[any]any{certKey{}: cert},
	}
	maps.Copy(out.CriticalOptions, perms.CriticalOptions)
	maps.Copy(out.Extensions, perms.Extensions)
	out.Extensions[ExtensionKeyID] = cert.KeyId
	out.Extensions[ExtensionLogin] = login
	return out, nil
}

// certKey is the key of the login's certificate in Permissions.ExtraData.
type certKey struct{}

// Evict ends the connections whose certificate's extensions (and the
// server's own, ExtensionLogin and ExtensionKeyID) refuse names: each of
// their sessions is told the reason on its stderr, then the connection is
// closed and its jobs killed. It returns how many it ended. A lock on a
// user ends their sessions this way, with a word on why.
func (s *Server) Evict(refuse func(ext map[string]string) string) int {
	s.mu.Lock()
	var doomed []*connection
	var reasons []string
	for c := range s.conns {
		if r := refuse(c.sc.Permissions.Extensions); r != "" {
			doomed, reasons = append(doomed, c), append(reasons, r)
		}
	}
	s.mu.Unlock()
	for i, c := range doomed {
		c.log.Info("ending ssh connection", "reason", reasons[i])
		c.tell("warren: " + reasons[i])
		c.sc.Close()
	}
	return len(doomed)
}

// Tell writes line to the stderr of every open session of the connections
// whose net.Conn (as given to ServeConn) match picks, and returns how many
// connections it told: a proxy that is shutting down warns the users who
// entered through it.
func (s *Server) Tell(match func(net.Conn) bool, line string) int {
	s.mu.Lock()
	var told []*connection
	for c := range s.conns {
		if match(c.nc) {
			told = append(told, c)
		}
	}
	s.mu.Unlock()
	for _, c := range told {
		c.tell(line)
	}
	return len(told)
}

// enter registers one Serve or ServeConn call with the server, unless the
// server is closed. Holding mu makes the wg.Add happen before Close waits.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Close closes every live connection and listener, kills the children of
// unfinished sessions and waits for all of the server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Serve accepts connections on ln and serves each in its own goroutine until
// ctx ends (it returns ctx.Err()), Close is called (ErrServerClosed) or
// Accept fails for good. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.enter() {
		ln.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()

	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-stop:
		}
		ln.Close()
	}()
	defer func() {
		close(stop)
		<-watched
	}()

	var backoff accept.Backoff
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.isClosing() {
				return ErrServerClosed
			}
			if !accept.Temporary(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors and the like: back off rather than
			// spin. watched is closed once ctx ends or Close is called.
			d := backoff.Next()
			s.log.Warn("ssh accept failed; retrying", "err", err, "backoff", d)
			accept.Sleep(d, watched)
			continue
		}
		backoff.Reset()
		// Register before the goroutine starts, so Close cannot miss it.
		if !s.enter() {
			conn.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			_ = s.serveConn(ctx, conn)
		}()
	}
}

func (s *Server) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// ServeConn runs the SSH handshake on conn and serves it until the client
// disconnects (nil), ctx ends (ctx.Err()) or Close is called
// (ErrServerClosed). A failed handshake or authentication is logged and
// returned. conn is always closed on return.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	if !s.enter() {
		conn.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	return s.serveConn(ctx, conn)
}

var errHandshakeTimeout = errors.New("handshake timed out")

func (s *Server) serveConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	remote := addrString(conn.RemoteAddr())

	// One watcher closes conn when the handshake takes too long, ctx ends
	// or the server closes; closing conn is what unblocks everything else.
	handshook := make(chan struct{})
	stop := make(chan struct{})
	watched := make(chan struct{})
	var timedOut atomic.Bool
	go func() {
		defer close(watched)
		t := time.NewTimer(s.handshakeTimeout)
		defer t.Stop()
		select {
		case <-handshook:
		case <-t.C:
			timedOut.Store(true)
			conn.Close()
			return
		case <-ctx.Done():
			conn.Close()
			return
		case <-s.closing:
			conn.Close()
			return
		case <-stop:
			return
		}
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-stop:
		}
		conn.Close()
	}()
	defer func() {
		close(stop)
		<-watched
	}()

	// A copy of the config per connection, so that authentication knows
	// which connection (and so which resource) it is for.
	cfg := *s.sshCfg
	var triedLogin string // the login asked for, for OnLoginRefused
	cfg.PublicKeyCallback = func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		triedLogin = meta.User()
		return s.authenticate(conn, meta, key)
	}
	sc, chans, reqs, err := ssh.NewServerConn(conn, &cfg)
	if err != nil {
		if timedOut.Load() {
			err = errHandshakeTimeout
		}
		var authErr *ssh.ServerAuthError
		if errors.As(err, &authErr) {
			// The errors are our reasons, one per key offered, and how
			// the client gave up.
			var reasons []string
			for _, e := range authErr.Errors {
				if !errors.Is(e, ssh.ErrNoAuth) {
					reasons = append(reasons, e.Error())
				}
			}
			s.log.Info("ssh auth failed", "remote", remote, "reasons", reasons)
			if s.cfg.OnLoginRefused != nil && len(reasons) > 0 {
				s.cfg.OnLoginRefused(conn, triedLogin, reasons)
			}
		} else {
			s.log.Info("ssh handshake failed", "remote", remote, "err", err)
		}
		return fmt.Errorf("ssh handshake with %s: %w", remote, err)
	}
	close(handshook)
	defer sc.Close()

	login := sc.User()
	log := s.log.With("remote", remote, "user", login, "key_id", sc.Permissions.Extensions[ExtensionKeyID])
	acct := s.self
	if s.root {
		// Resolved again, not cached from auth: the answer may change and
		// a session must run with what passwd says now.
		if acct, err = lookupAccount(login); err != nil {
			log.Info("ssh login refused", "err", err)
			return fmt.Errorf("ssh login %s from %s: %w", login, remote, err)
		}
	}
	if s.cfg.OnLogin != nil {
		s.cfg.OnLogin(conn, login, sc.Permissions.Extensions[ExtensionKeyID])
	}
	_, permitPTY := sc.Permissions.Extensions[permitPTYExtension]
	cert, _ := sc.Permissions.ExtraData[certKey{}].(*ssh.Certificate)
	c := &connection{
		srv:          s,
		sc:           sc,
		nc:           conn,
		cert:         cert,
		log:          log,
		acct:         acct,
		forceCommand: sc.Permissions.CriticalOptions[forceCommandOption],
		permitPTY:    permitPTY,
	}
	c.sshConn, c.sshClient = sshConnectionEnv(conn.RemoteAddr(), conn.LocalAddr())
	c.ctx, c.cancel = context.WithCancel(ctx)
	log.Info("ssh login")
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*connection]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve(chans, reqs)
	log.Debug("ssh connection closed")

	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case s.isClosing():
		return ErrServerClosed
	}
	return nil
}

// sshConnectionEnv is the SSH_CONNECTION value ("client port server
// port") and the SSH_CLIENT value ("client port server-port"), as sshd
// sets them, or "" for both when the conn does not carry TCP addresses.
// The agent hands the server a conn whose RemoteAddr is the user's client
// as the proxy saw it, so the node's jobs see who is on the other end
// rather than the tunnel.
func sshConnectionEnv(remote, local net.Addr) (conn, client string) {
	r, ok1 := remote.(*net.TCPAddr)
	l, ok2 := local.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return "", ""
	}
	return fmt.Sprintf("%s %d %s %d", r.IP, r.Port, l.IP, l.Port), fmt.Sprintf("%s %d %d", r.IP, r.Port, l.Port)
}

// addrString is a.String(), tolerating the nil address a tunnel adapter
// might return.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
