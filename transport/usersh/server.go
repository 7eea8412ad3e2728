// Package usersh is the proxy's SSH server for users: a jump host.
//
// Users authenticate with a user certificate from the cluster user CA. A
// "direct-tcpip" channel (what `ssh -J`, `ssh -W` and `ssh -L` send) names
// a resource as its host; the server hands it to the Handler, which owns
// the channel from then on. A "session" channel runs one proxy command
// (`ssh -p 3023 alice@proxy ls`) through the Handler; a shell gets a short
// help text. Nothing else is allowed.
//
// # Limits
//
// An authenticated user is bounded by channel caps (Config
// MaxChannelsPerConn and MaxChannelsPerUser): a channel over a cap is
// refused with a reason while the connection and its other channels go on.
// A direct-tcpip target that cannot be a resource name is refused before
// the Handler sees it, so an oversized or hostile name never reaches the
// audit log. Before authentication, a connection counts against
// MaxHandshakes and MaxHandshakesPerIP until its handshake ends (at most
// HandshakeTimeout); one over a cap is closed at once with a one-line
// reason. Refusals that can come in floods are logged sampled: the first
// at once, then at most one line per interval with a count.
package usersh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/accept"
	"github.com/warren-proxy/warren/internal/gate"
	"github.com/warren-proxy/warren/internal/logsample"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
)

// Identity is who is on a connection, from their certificate.
type Identity struct {
	User       string
	Roles      []string
	Logins     []string
	KeyID      string
	Serial     uint64
	ValidUntil time.Time
	// CertTTL is how long the certificate was issued for.
	CertTTL time.Duration
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

// Target is the destination of a direct-tcpip channel. Host has passed
// Config.CheckTarget and Port is at most 65535.
type Target struct {
	Host string
	Port uint32
}

// Handler serves what users ask for.
type Handler interface {
	// DirectTCPIP owns nch: it must Accept or Reject it, and call done
	// once it is finished with the channel: after a Reject, or once the
	// accepted channel is closed. Until then the channel counts against
	// the connection's and the user's channel caps; returning is not
	// enough, since a handler may hand the channel to another goroutine
	// and return at once. done may be called from any goroutine, and more
	// than once (only the first call counts).
	DirectTCPIP(ctx context.Context, conn *Conn, target Target, nch ssh.NewChannel, done func())
	// Command runs a proxy command and returns its exit status; stdin is
	// what the user sends (for example a resource definition).
	Command(ctx context.Context, conn *Conn, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// Defaults of the Config limits.
const (
	// DefaultMaxChannelsPerConn leaves room for `ssh -L` carrying a few
	// hundred parallel downloads over one connection (200 is a use seen
	// in practice) and for ControlMaster multiplexing, while a single
	// connection can no longer open thousands (a review opened 5,000:
	// +230 MB, 35,000 goroutines). OpenSSH's MaxSessions (10) counts only
	// session channels; sshd does not cap forwarded ones at all.
	DefaultMaxChannelsPerConn = 256
	// DefaultMaxChannelsPerUser is four busy connections' worth.
	DefaultMaxChannelsPerUser = 4 * DefaultMaxChannelsPerConn
	// DefaultMaxHandshakes bounds unauthenticated connections. An idle one
	// costs the proxy about 7 KB (a goroutine and its buffers, measured
	// with 1,000) and one in its key exchange somewhat more, so the cap is
	// about keeping a flood from growing without bound rather than about
	// each connection; compare sshd's MaxStartups, which starts dropping
	// at 10.
	DefaultMaxHandshakes = 256
	// DefaultMaxHandshakesPerIP is more than a person or a script with a
	// few dozen parallel ssh processes starts at once from one address
	// (each handshake takes milliseconds to a few round trips), and far
	// less than DefaultMaxHandshakes, so that one address cannot take
	// every slot.
	DefaultMaxHandshakesPerIP = 16
)

// Config configures a Server. New fills in the defaults on its own copy;
// the caller's Config is never written to.
type Config struct {
	HostSigners      []ssh.Signer
	UserCAs          []ssh.PublicKey
	Handler          Handler
	HandshakeTimeout time.Duration // default 10s
	Clock            func() time.Time
	Logger           *slog.Logger
	// Help is printed to a user who asks for a shell on the proxy.
	Help string
	// Authorize, if set, is asked about every user whose certificate is
	// valid; an error refuses the login and its text is shown to the user
	// (a lock, a role that does not exist, a certificate too long-lived).
	Authorize func(Identity) error

	// MaxChannelsPerConn bounds the channels (direct-tcpip and session)
	// open at once on one connection; 0 means DefaultMaxChannelsPerConn,
	// negative is refused. A channel is open from its request until the
	// Handler calls done (direct-tcpip) or the session ends. Each open
	// channel may also hold up to 2 MiB the user sent and the resource
	// has not read yet (x/crypto's fixed channel window), which bounds
	// what a connection can make the proxy buffer.
	MaxChannelsPerConn int
	// MaxChannelsPerUser bounds the channels open at once over all of a
	// user's connections; 0 means 4 × MaxChannelsPerConn, negative is
	// refused. The effective cap of one connection is the smaller one.
	MaxChannelsPerUser int
	// MaxHandshakes bounds the connections still in their SSH handshake
	// (not yet authenticated), over all addresses; 0 means
	// DefaultMaxHandshakes, negative is refused. A connection over it is
	// closed at once, so when it is full even users with a good
	// certificate wait for slots to free, which HandshakeTimeout bounds.
	MaxHandshakes int
	// MaxHandshakesPerIP is the same cap per client address (an IPv6
	// client per /64, what one host is normally given); 0 means
	// DefaultMaxHandshakesPerIP, negative is refused.
	MaxHandshakesPerIP int
	// CheckTarget vets the host of a direct-tcpip channel before the
	// Handler sees it; an error refuses the channel and says why to the
	// user (the server quotes and truncates the name itself, and bounds
	// the error's length). nil means CheckResourceName.
	CheckTarget func(host string) error
	// RTTInterval is how often the server measures each connection's
	// round trip with a keepalive@openssh.com request (every client
	// answers it, if only to say it does not know it): once right after
	// the handshake, then every RTTInterval. 0 means DefaultRTTInterval,
	// negative turns it off. OnRTT, if set, is told of each measurement.
	RTTInterval time.Duration
	OnRTT       func(time.Duration)
}

// DefaultRTTInterval is Config.RTTInterval's default: a request of a few
// dozen bytes per connection per interval.
const DefaultRTTInterval = 30 * time.Second

// CheckResourceName is the default Config.CheckTarget: host must be a
// Warren resource name (model.ValidName), since nothing else can be
// routed. Its error never repeats the name.
func CheckResourceName(host string) error {
	if model.ValidName(host) {
		return nil
	}
	return errors.New("a resource name is " + model.NameRule)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxChannelsPerConn", c.MaxChannelsPerConn},
		{"MaxChannelsPerUser", c.MaxChannelsPerUser},
		{"MaxHandshakes", c.MaxHandshakes},
		{"MaxHandshakesPerIP", c.MaxHandshakesPerIP},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d: it must be positive, or 0 for the default", f.name, f.v))
		}
	}
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

	// Sampled logs of refusals that an attacker can repeat at will.
	refusedHandshakes *logsample.Sampler
	refusedChannels   *logsample.Sampler
	refusedTargets    *logsample.Sampler

	wg       sync.WaitGroup // every connection goroutine
	mu       sync.Mutex     // guards the fields below
	ln       map[net.Listener]bool
	hs       map[net.Conn]func() // connections still in their handshake → leave their gate
	gate     *gate.Gate          // counts them overall and per address
	cs       map[*Conn]bool
	userOpen map[string]int // user → open channels over all connections
	closed   bool
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("user ssh config: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.RTTInterval == 0 {
		cfg.RTTInterval = DefaultRTTInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxChannelsPerConn == 0 {
		cfg.MaxChannelsPerConn = DefaultMaxChannelsPerConn
	}
	if cfg.MaxChannelsPerUser == 0 {
		cfg.MaxChannelsPerUser = 4 * cfg.MaxChannelsPerConn
	}
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MaxHandshakesPerIP == 0 {
		cfg.MaxHandshakesPerIP = DefaultMaxHandshakesPerIP
	}
	if cfg.CheckTarget == nil {
		cfg.CheckTarget = CheckResourceName
	}
	s := &Server{
		cfg:      cfg,
		ln:       map[net.Listener]bool{},
		hs:       map[net.Conn]func(){},
		gate:     &gate.Gate{Max: cfg.MaxHandshakes, MaxPerIP: cfg.MaxHandshakesPerIP},
		cs:       map[*Conn]bool{},
		userOpen: map[string]int{},

		refusedHandshakes: logsample.New(cfg.Logger, "user connection refused before its handshake", logsample.Every),
		refusedChannels:   logsample.New(cfg.Logger, "user channel refused: too many open", logsample.Every),
		refusedTargets:    logsample.New(cfg.Logger, "direct-tcpip refused: not a resource name", logsample.Every),
	}
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

type certKey struct{}

// authenticate accepts user certificates from the user CA (pki's one
// check), then asks Config.Authorize. The SSH user name must be the Warren
// user name or one of the certificate's logins.
func (s *Server) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if _, ok := key.(*ssh.Certificate); !ok {
		// Clients offer plain keys before certificates; a banner here
		// would be noise, the final message below is what users see.
		return nil, errors.New("not a certificate")
	}
	cert, err := pki.CheckUserCert(key, pki.CertOptions{Authorities: s.cfg.UserCAs, Now: s.cfg.Clock(), ClientAddr: meta.RemoteAddr()})
	fail := func(msg string) (*ssh.Permissions, error) {
		keyID := ""
		if c, ok := key.(*ssh.Certificate); ok {
			keyID = c.KeyId
		}
		s.cfg.Logger.Warn("user auth refused", "user", model.Quote(meta.User()), "key_id", model.Quote(keyID), "remote", meta.RemoteAddr().String(), "reason", msg)
		return nil, &ssh.BannerError{Err: errors.New(msg), Message: "warren: " + msg + "\n"}
	}
	if err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "certificate ") {
			msg = "your " + msg
		}
		if errors.Is(err, pki.ErrExpired) || errors.Is(err, pki.ErrUnknownAuthority) {
			msg += "; get a new certificate with `warren user add`"
		}
		return fail(msg)
	}
	id := identityOf(cert)
	if meta.User() != id.User && !slices.Contains(cert.ValidPrincipals, meta.User()) {
		return fail(fmt.Sprintf("log in to the proxy as %q (your user name), not %s", id.User, model.Quote(meta.User())))
	}
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(id); err != nil {
			return fail(err.Error())
		}
	}
	return &ssh.Permissions{ExtraData: map[any]any{certKey{}: cert}}, nil
}

// identityOf reads who a (verified) user certificate is.
func identityOf(cert *ssh.Certificate) Identity {
	user, roles := pki.UserFromCert(cert)
	id := Identity{User: user, Roles: roles, Logins: slices.Clone(cert.ValidPrincipals), KeyID: cert.KeyId, Serial: cert.Serial}
	if cert.ValidBefore != ssh.CertTimeInfinity {
		id.ValidUntil = time.Unix(int64(cert.ValidBefore), 0)
		id.CertTTL = pki.CertTTL(cert)
	}
	return id
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
	var backoff accept.Backoff
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			if !accept.Temporary(err) {
				return fmt.Errorf("accept user connection: %w", err)
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than spin or stop serving users.
			d := backoff.Next()
			s.cfg.Logger.Warn("accept user connection failed; retrying", "err", err, "in", d)
			if !accept.Sleep(d, ctx.Done()) {
				return nil
			}
			continue
		}
		backoff.Reset()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		// Checked before any goroutine or SSH state exists, so a flood
		// costs an accept and a close per connection.
		leave, refusal := s.gate.Enter(nc.RemoteAddr())
		if refusal == "" {
			s.hs[nc] = leave
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if refusal != "" {
			s.refuseHandshake(nc, refusal)
			continue
		}
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

// refuseHandshake closes a connection over a handshake cap. The reason
// goes first, as a line before the SSH version (RFC 4253 section 4.2
// allows them; OpenSSH's client shows them with -v), with a short write
// deadline: the accept loop must not wait on a client.
func (s *Server) refuseHandshake(nc net.Conn, reason string) {
	_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = io.WriteString(nc, "warren: "+reason+"; try again in a moment\r\n")
	nc.Close()
	s.refusedHandshakes.Event("remote", nc.RemoteAddr().String(), "reason", reason)
}

// endHandshake takes nc off the handshake counts.
func (s *Server) endHandshake(nc net.Conn) {
	s.mu.Lock()
	leave, ok := s.hs[nc]
	delete(s.hs, nc)
	s.mu.Unlock()
	if ok {
		leave()
	}
}

// CloseConns ends every connection whose user refuse names, with the
// reason it returns, and returns how many: a lock ends a user's sessions.
// The connection takes no new channel from then on (each is refused with
// the reason) and is closed after grace, which gives the nodes behind it
// time to tell the user why their sessions end (the proxy cannot write
// into a session it only forwards).
func (s *Server) CloseConns(refuse func(Identity) string, grace time.Duration) int {
	s.mu.Lock()
	var doomed []*Conn
	for c := range s.cs {
		if c.ending.Load() != nil {
			continue
		}
		if r := refuse(c.Identity); r != "" {
			c.ending.Store(&r)
			doomed = append(doomed, c)
		}
	}
	s.mu.Unlock()
	for _, c := range doomed {
		s.cfg.Logger.Info("ending user connection", "user", c.Identity.User, "conn", c.ID, "reason", *c.ending.Load(), "in", grace)
		time.AfterFunc(grace, func() { c.ssh.Close() })
	}
	return len(doomed)
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
	for _, l := range []*logsample.Sampler{s.refusedHandshakes, s.refusedChannels, s.refusedTargets} {
		l.Stop()
	}
	return nil
}

// Conn is one authenticated user connection.
type Conn struct {
	ID         string
	Identity   Identity
	RemoteAddr net.Addr
	ssh        *ssh.ServerConn

	open int // channels open on this connection; guarded by Server.mu

	mu     sync.Mutex        // guards sticky
	sticky map[string]string // resource → agent id this connection uses

	ending atomic.Pointer[string] // why the connection is being ended (CloseConns)
	rtt    atomic.Int64           // last measured round trip, ns; 0 until measured
}

// RTT is the connection's last measured round trip (see
// Config.RTTInterval), or 0 before the first measurement.
func (c *Conn) RTT() time.Duration { return time.Duration(c.rtt.Load()) }

// measureRTT sends keepalives until ctx ends and records their round
// trips; a request stays unanswered at most until the connection ends.
func (s *Server) measureRTT(ctx context.Context, c *Conn) {
	if s.cfg.RTTInterval < 0 {
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if _, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			return
		}
		d := time.Since(start)
		c.rtt.Store(int64(d))
		if s.cfg.OnRTT != nil {
			s.cfg.OnRTT(d)
		}
		t.Reset(s.cfg.RTTInterval)
	}
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
	s.endHandshake(nc)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		// Closed by the client before the handshake ended, most often
		// before a byte of it: a load balancer's TCP check, or `warren
		// connect` measuring proxies it did not pick. Not worth a line.
		s.cfg.Logger.Debug("user connection closed during its handshake", "remote", nc.RemoteAddr().String())
		nc.Close()
		return
	}
	if err != nil {
		s.cfg.Logger.Info("user handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	c := &Conn{ID: newID(), RemoteAddr: sconn.RemoteAddr(), ssh: sconn, Identity: identityOf(sconn.Permissions.ExtraData[certKey{}].(*ssh.Certificate))}
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
	wg.Go(func() { s.measureRTT(connCtx, c) })
	for nch := range chans {
		if why := c.ending.Load(); why != nil {
			_ = nch.Reject(ssh.Prohibited, "warren: "+*why)
			continue
		}
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
			if msg := s.checkTarget(c, p.Host, p.Port); msg != "" {
				_ = nch.Reject(ssh.ConnectionFailed, msg)
				continue
			}
			release, ok := s.acquire(c, nch)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.cfg.Handler.DirectTCPIP(connCtx, c, Target{Host: p.Host, Port: p.Port}, nch, release)
			}()
		case "session":
			release, ok := s.acquire(c, nch)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer release()
				s.serveSession(connCtx, c, nch)
			}()
		default:
			_ = nch.Reject(ssh.UnknownChannelType, fmt.Sprintf("the proxy does not serve %q channels", nch.ChannelType()))
		}
	}
	s.cfg.Logger.Info("user disconnected", "user", c.Identity.User, "conn", c.ID)
}

// maxNameInMessage is how much of a refused name a message or a log line
// repeats.
const maxNameInMessage = 64

// checkTarget vets a direct-tcpip target and returns the refusal message
// for the user, or "" if the target may go to the Handler.
func (s *Server) checkTarget(c *Conn, host string, port uint32) string {
	var msg, reason string
	if err := s.cfg.CheckTarget(host); err != nil {
		reason = clean(err.Error(), 200)
		msg = fmt.Sprintf("warren: %s is not a resource name: %s", quoteName(host), reason)
	} else if port > 65535 {
		reason = "port out of range"
		msg = fmt.Sprintf("warren: port %d is out of range", port)
	} else {
		return ""
	}
	s.refusedTargets.Event("user", c.Identity.User, "conn", c.ID, "remote", c.RemoteAddr.String(),
		"host", quoteName(host), "host_bytes", len(host), "port", port, "reason", reason)
	return msg
}

// quoteName quotes a user-supplied name for a message or a log line:
// escaped to printable ASCII, and cut to maxNameInMessage bytes with its
// full length, so a 200 KB name costs a line, not 200 KB.
func quoteName(name string) string {
	if len(name) <= maxNameInMessage {
		return strconv.QuoteToASCII(name)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.QuoteToASCII(name[:maxNameInMessage]), len(name))
}

// clean keeps printable ASCII of s (anything else becomes '?') and cuts it
// to max bytes: a custom CheckTarget's error goes to the user and the log.
func clean(s string, max int) string {
	cut := len(s) > max
	if cut {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if cut {
		return string(b) + "..."
	}
	return string(b)
}

// acquire counts a new channel against c's and its user's caps. Over a cap
// it refuses nch itself and returns false; otherwise it returns the func
// that uncounts the channel, which does so once however often it is
// called.
func (s *Server) acquire(c *Conn, nch ssh.NewChannel) (release func(), ok bool) {
	user := c.Identity.User
	s.mu.Lock()
	var msg string
	var limit int
	switch {
	case c.open >= s.cfg.MaxChannelsPerConn:
		limit = s.cfg.MaxChannelsPerConn
		msg = fmt.Sprintf("warren: this connection has %d channels open, the most the proxy allows on one connection; close some or use another connection", c.open)
	case s.userOpen[user] >= s.cfg.MaxChannelsPerUser:
		limit = s.cfg.MaxChannelsPerUser
		msg = fmt.Sprintf("warren: user %s has %d channels open over all connections, the most the proxy allows; close some", quoteName(user), s.userOpen[user])
	default:
		c.open++
		s.userOpen[user]++
	}
	s.mu.Unlock()
	if msg != "" {
		_ = nch.Reject(ssh.ResourceShortage, msg)
		s.refusedChannels.Event("user", user, "conn", c.ID, "remote", c.RemoteAddr.String(), "type", nch.ChannelType(), "limit", limit)
		return nil, false
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			c.open--
			if s.userOpen[user]--; s.userOpen[user] <= 0 {
				delete(s.userOpen, user)
			}
		})
	}, true
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
