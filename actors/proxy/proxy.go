// Package proxy assembles a Warren proxy: the user SSH listener (a jump
// host), the agent tunnel listener, the HTTP endpoint, and the actors
// behind them (router, one tunnel actor per agent tunnel, one session actor
// per user session), with the catalog in Pebble and the audit log in bbolt.
//
// Lifecycle: New(cfg) → Start(ctx) → Close().
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/warren-proxy/warren/actors/forward"
	"github.com/warren-proxy/warren/actors/httpapi"
	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/actors/session"
	"github.com/warren-proxy/warren/actors/tunnel"
	"github.com/warren-proxy/warren/actors/usercmd"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/membership"
	"github.com/warren-proxy/warren/internal/accept"
	"github.com/warren-proxy/warren/internal/gate"
	"github.com/warren-proxy/warren/internal/logsample"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/storage/catalog"
	"github.com/warren-proxy/warren/transport/peer"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
	"github.com/warren-proxy/warren/transport/streams"
	"github.com/warren-proxy/warren/transport/usersh"
)

// Version is reported to agents and in status.
var Version = "0.1.0-dev"

// Proxy is one Warren proxy process.
type Proxy struct {
	cfg        Config
	log        *slog.Logger
	publicAddr string // cfg.PublicAddr with the real port
	auth       *pki.Authority

	hostSigner   ssh.Signer   // the host key with its certificate
	hostKeys     []ssh.Signer // the plain host keys, for clients that pin keys
	catalog      *catalog.Store
	audit        *audit.Log
	auditor      *auditor           // audit, with its health for readiness
	rec          recordingState     // session recordings agents upload (recordings.go)
	refusedPeers *logsample.Sampler // peer calls from proxies that are not members
	tunnelGate   *gate.Gate         // agents' connections before they authenticate
	refusedConns *logsample.Sampler // tunnel connections over tunnelGate
	busy         busyQueue          // when those are asked to come back
	// policy is the stored roles and user locks, as agents were last told.
	policy atomic.Pointer[revtunnel.PolicySet]
	system *actor.ActorSystem
	table  *router.Table
	router *actor.PID

	tunnelSrv *revtunnel.Server
	userSrv   *usersh.Server
	httpSrv   *http.Server

	userLn, tunnelLn, httpLn net.Listener

	remote     *remote.Remote
	peerAddr   string              // where peers reach this proxy (protoactor remote + streams)
	farAddr    string              // where peers of other regions open streams ("" when off)
	farSrv     *grpc.Server        // serves them (nil when off)
	farDone    chan struct{}       // closed when farSrv has stopped serving
	tunnelAddr string              // where agents reach this proxy
	dialer     *peer.Dialer        // opens data streams to peers
	rendezvous *forward.Rendezvous // channels tunnels opened, until their session claims them
	members    *membership.Membership
	load       *forward.Load   // live sessions per agent, failed agents, peer round trips
	prober     *forward.Prober // measures the round trip to every member's router

	cancel   context.CancelFunc
	wg       sync.WaitGroup // accept loops and handshakes
	sessions sync.WaitGroup // live session actors
	// live are the sessions that entered through this proxy and run.
	live session.Live
	// Draining: release ends the streams this proxy forwards for other
	// proxies' sessions; hurry ends the shutdown grace; drainAsked is
	// closed by Drain.
	release, hurry, drainAsked        chan struct{}
	releaseOnce, hurryOnce, drainOnce sync.Once
	closeOnce                         sync.Once
	closeErr                          error
	tunnels                           sync.WaitGroup // live tunnel actors
	metrics                           *metrics

	mu      sync.Mutex // guards the fields below
	started bool
	closed  bool
	ready   bool
	tunPIDs map[*actor.PID]tunnelInfo
}

// tunnelInfo is what the proxy knows of one of its tunnels: whose it is,
// to close it when the agent or its token is locked.
type tunnelInfo struct {
	agent string
	grant access.Grant
}

// New checks cfg and returns a proxy that is not started yet.
func New(cfg Config) (*Proxy, error) {
	cfg, err := cfg.CheckAndSetDefaults()
	if err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	log := cfg.Logger.With("proxy", cfg.ID)
	p := &Proxy{
		cfg: cfg, log: log, tunPIDs: map[*actor.PID]tunnelInfo{}, load: forward.NewLoad(),
		rendezvous:   forward.NewRendezvous(forward.DefaultParkTTL),
		refusedPeers: logsample.New(log, "peer call refused: not a live member of the cluster", logsample.Every),
		tunnelGate:   &gate.Gate{Max: maxTunnelHandshakes, MaxPerIP: maxTunnelHandshakesPerIP},
		refusedConns: logsample.New(log, "tunnel connection refused before its handshake", logsample.Every),
		release:      make(chan struct{}), hurry: make(chan struct{}), drainAsked: make(chan struct{}),
	}
	p.metrics = newMetrics(p)
	return p, nil
}

// Start opens the proxy's state and starts serving. On error everything
// already opened is closed again.
func (p *Proxy) Start(ctx context.Context) (err error) {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("proxy already started")
	}
	p.started = true
	p.mu.Unlock()
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.auth, err = pki.Load(p.cfg.AuthDir); err != nil {
		return err
	}
	if err := os.MkdirAll(p.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if p.hostSigner, p.hostKeys, err = p.loadHostKey(); err != nil {
		return err
	}
	if p.catalog, err = catalog.Open(filepath.Join(p.cfg.DataDir, "catalog"), catalog.Options{Logger: p.log}); err != nil {
		return err
	}
	if p.audit, err = audit.Open(filepath.Join(p.cfg.DataDir, "audit.db"), audit.Options{Logger: p.log}); err != nil {
		return err
	}
	p.auditor = newAuditor(p.audit, p.metrics)
	if r := p.audit.Replaced(); r != "" {
		// Serving on is right (refusing would stop every session), but
		// the gap is recorded where auditors look.
		p.log.Error("the audit log was replaced", "detail", r)
		if _, err := p.auditor.Append(audit.Event{Type: "audit.replaced", ProxyID: p.cfg.ID, Outcome: "error", Error: r}); err != nil {
			p.log.Error("record the replaced audit log", "err", err)
		}
	}
	p.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	if err := p.startListeners(); err != nil {
		return err
	}
	if err := p.startPeer(); err != nil {
		return err
	}
	p.table = router.NewTable()
	props, err := router.NewProps(router.Config{
		ProxyID:          p.cfg.ID,
		Region:           p.cfg.Region,
		Store:            p.catalog,
		Table:            p.table,
		HeartbeatTTL:     p.cfg.Tunnel.HeartbeatTTL,
		OfflineRetention: p.cfg.Tunnel.OfflineRetention,
		Epoch:            uint64(p.cfg.Clock().UnixNano()),
		OnDefinitions:    p.pushDefinitions,
		OnPolicy:         p.enforce,
		Reserved:         p.reservedName,
		HostKey:          authorizedLines(p.hostKeys),
		UserAddr:         p.publicAddr,
		Clock:            p.cfg.Clock,
		Logger:           p.log,
	})
	if err != nil {
		return err
	}
	if p.router, err = p.system.Root.SpawnNamed(props, "router"); err != nil {
		return fmt.Errorf("spawn router: %w", err)
	}
	if _, err := p.system.Root.RequestFuture(p.router, &router.Sync{}, 30*time.Second).Result(); err != nil {
		return fmt.Errorf("router did not load the catalog: %w", err)
	}
	if _, err := p.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &auditServer{p: p} }), AuditName); err != nil {
		return fmt.Errorf("spawn the audit server: %w", err)
	}
	if err := p.openRecordings(); err != nil {
		return err
	}
	if err := p.startServers(); err != nil {
		return err
	}
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := p.startMembership(ctx); err != nil {
		return err
	}
	if _, err := p.system.Root.RequestFuture(p.router, &router.Sync{}, 30*time.Second).Result(); err != nil {
		return fmt.Errorf("router did not take the membership: %w", err)
	}
	p.serve(ctx)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.auditor.probe(ctx, 5*time.Second, p.cfg.ID)
	}()
	go func() {
		defer p.wg.Done()
		p.expireRecordings(ctx, time.Hour)
	}()
	p.mu.Lock()
	p.ready = true
	p.mu.Unlock()
	p.log.Info("proxy started", "user", p.userLn.Addr().String(), "tunnel", p.tunnelLn.Addr().String(), "http", p.httpLn.Addr().String(), "peer", p.peerAddr, "far_peer", p.farAddr)
	return nil
}

func (p *Proxy) startListeners() (err error) {
	if p.userLn, err = net.Listen("tcp", p.cfg.Listen.User); err != nil {
		return fmt.Errorf("listen for users on %s: %w", p.cfg.Listen.User, err)
	}
	if p.tunnelLn, err = net.Listen("tcp", p.cfg.Listen.Tunnel); err != nil {
		return fmt.Errorf("listen for agent tunnels on %s: %w", p.cfg.Listen.Tunnel, err)
	}
	if p.httpLn, err = net.Listen("tcp", p.cfg.Listen.HTTP); err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", p.cfg.Listen.HTTP, err)
	}
	p.publicAddr = p.cfg.PublicAddr
	if _, port, _ := net.SplitHostPort(p.publicAddr); port == "0" {
		// A test or dev proxy on a free port: tell users the real one.
		p.publicAddr = p.userLn.Addr().String()
	}
	return nil
}

// startServers creates the tunnel, user and HTTP servers.
func (p *Proxy) startServers() (err error) {
	p.tunnelSrv, err = revtunnel.NewServer(revtunnel.ServerConfig{
		HostSigner:     p.hostSigner,
		AgentCA:        p.auth.AgentCA.PublicKey(),
		AuthorizeAgent: p.authorizeAgent,
		CheckJoinToken: p.checkJoinToken,
		Join:           p.join,
		Clock:          p.cfg.Clock,
		Logger:         p.log,
	})
	if err != nil {
		return err
	}
	p.userSrv, err = usersh.New(usersh.Config{
		// The certificate for clients that trust the CA (OpenSSH), the plain
		// key for those that cannot (paramiko, libssh2, PuTTY without a CA
		// file), which pin it from `warren known-hosts`.
		HostSigners: append([]ssh.Signer{p.hostSigner}, p.hostKeys...),
		UserCAs:     []ssh.PublicKey{p.auth.UserCA.PublicKey()},
		Handler:     userHandler{p},
		Authorize:   p.authorizeUser,
		Clock:       p.cfg.Clock,
		Logger:      p.log,
		Help:        p.help(),
		OnRTT:       func(d time.Duration) { p.metrics.userConnRTT.Observe(d.Seconds()) },
	})
	if err != nil {
		return err
	}
	// Every HTTP connection is bounded: headers in http.read_header_timeout,
	// a whole request in 30 s, an idle keep-alive connection closed after
	// http.idle_timeout (profiles stream for up to their own duration, so
	// writes are not bounded).
	p.httpSrv = &http.Server{
		Handler:           httpapi.Handler(httpView{p}),
		ReadHeaderTimeout: p.cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       max(30*time.Second, p.cfg.HTTP.ReadHeaderTimeout),
		IdleTimeout:       p.cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	return nil
}

func (p *Proxy) serve(ctx context.Context) {
	p.wg.Add(3)
	go func() {
		defer p.wg.Done()
		if err := p.userSrv.Serve(ctx, p.userLn); err != nil {
			p.log.Error("user listener stopped", "err", err)
		}
	}()
	go func() {
		defer p.wg.Done()
		p.acceptTunnels(ctx)
	}()
	go func() {
		defer p.wg.Done()
		// Close closes the listener before the server, so a clean stop
		// ends Serve with net.ErrClosed as often as with ErrServerClosed.
		if err := p.httpSrv.Serve(p.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			p.log.Error("http listener stopped", "err", err)
		}
	}()
}

// UserAddr, TunnelAddr and HTTPAddr are the bound listen addresses.
func (p *Proxy) UserAddr() string   { return p.userLn.Addr().String() }
func (p *Proxy) TunnelAddr() string { return p.tunnelLn.Addr().String() }
func (p *Proxy) HTTPAddr() string   { return p.httpLn.Addr().String() }

// Router is the router actor's PID and ActorSystem the proxy's actor
// system, for benchmarks and tests that drive the router directly.
func (p *Proxy) Router() *actor.PID              { return p.router }
func (p *Proxy) ActorSystem() *actor.ActorSystem { return p.system }

// SessionCounts returns the live sessions this proxy routes, per agent.
func (p *Proxy) SessionCounts() map[string]int {
	return p.load.Live()
}

// GossipAddr is the bound gossip address (seeds for other proxies).
func (p *Proxy) GossipAddr() string { return p.members.GossipAddr() }

// PeerAddr is the advertised peer address.
func (p *Proxy) PeerAddr() string { return p.peerAddr }

// Members lists the cluster's live proxies as this proxy sees them.
func (p *Proxy) Members() []membership.Member { return p.members.Members() }

// Config returns the proxy's config as given to New, with defaults.
func (p *Proxy) Config() Config { return p.cfg }

// ID is the proxy's id.
func (p *Proxy) ID() string { return p.cfg.ID }

// Table is the proxy's route table (read-only snapshots).
func (p *Proxy) Table() *router.Table { return p.table }

// Audit is the proxy's audit log.
func (p *Proxy) Audit() *audit.Log { return p.audit }

// acceptTunnels accepts agents' connections on tunnelLn until it is closed
// or ctx ends, and hands each to handshakeTunnel under the handshake caps.
func (p *Proxy) acceptTunnels(ctx context.Context) {
	var backoff accept.Backoff
	for {
		nc, err := p.tunnelLn.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than spin. Any other error is retried
			// too (at most once a second): without this listener the
			// proxy loses its agents.
			d := backoff.Next()
			level := slog.LevelError
			if accept.Temporary(err) {
				level = slog.LevelWarn
			}
			p.log.Log(ctx, level, "accept tunnel failed; retrying", "err", err, "in", d)
			if !accept.Sleep(d, ctx.Done()) {
				return
			}
			continue
		}
		backoff.Reset()
		// Checked before a goroutine exists, so a flood costs an accept,
		// a write and a close per connection.
		leave, refusal := p.tunnelGate.Enter(nc.RemoteAddr())
		if refusal != "" {
			p.turnAway(nc, refusal)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handshakeTunnel(ctx, nc, leave)
		}()
	}
}

// Bounds on agents' connections still in their handshake: enough for a
// fleet behind one NAT address reconnecting at once (an agent turned away
// is told the proxy is busy and when to come back: busy.go), small enough
// that idle connections cannot take the proxy's memory.
const (
	maxTunnelHandshakes      = 512
	maxTunnelHandshakesPerIP = 64
)

// handshakeTunnel authenticates an agent's connection and, for a tunnel,
// spawns its actor; leave frees its place under the handshake caps.
func (p *Proxy) handshakeTunnel(ctx context.Context, nc net.Conn, leave func()) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
	counted := &countingConn{Conn: nc}
	start := time.Now()
	conn, err := p.tunnelSrv.Handshake(ctx, counted)
	leave()
	if err == nil {
		streams.Shallow(nc)
	}
	if err == nil || errors.Is(err, revtunnel.ErrJoined) {
		// An agent's whole handshake: how long one holds its place under
		// the caps, which paces those turned away meanwhile.
		p.busy.observe(time.Since(start))
	}
	if err != nil {
		switch {
		case errors.Is(err, revtunnel.ErrJoined):
		case counted.read.Load() == 0:
			// Agents measure their round trip to every proxy by opening a
			// connection and resetting it: not worth a line each.
			p.log.Debug("tunnel connection closed before its handshake (an agent's probe)", "remote", nc.RemoteAddr().String())
		default:
			p.metrics.tunnelsAccepted.WithLabelValues("refused").Inc()
			p.log.Info("tunnel refused", "remote", nc.RemoteAddr().String(), "err", err)
		}
		return
	}
	p.metrics.tunnelsAccepted.WithLabelValues("ok").Inc()
	grant, err := agentGrant(conn.Cert)
	if err != nil { // authorizeAgent checked it; be safe anyway
		conn.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		conn.Close()
		return
	}
	var pid *actor.PID
	props, err := tunnel.NewProps(tunnel.Config{
		Conn:              conn,
		AgentID:           conn.AgentID,
		HostKey:           conn.Cert.Key,
		Router:            p.router,
		ProxyID:           p.cfg.ID,
		Hello:             func(h revtunnel.Hello) revtunnel.HelloReply { return p.hello(conn, h) },
		Renew:             func() revtunnel.RenewReply { return p.renew(conn) },
		Grant:             grant,
		KeepaliveInterval: p.cfg.Tunnel.KeepaliveInterval,
		KeepaliveCount:    p.cfg.Tunnel.KeepaliveCount,
		Rendezvous:        p.rendezvous,
		PeerAddr:          p.peerAddr,
		Audit:             p.auditor,
		Recordings:        p,
		Tickets:           p,
		Clock:             p.cfg.Clock,
		Logger:            p.log,
		Done: func() {
			p.mu.Lock()
			delete(p.tunPIDs, pid)
			p.mu.Unlock()
			p.tunnels.Done()
		},
	})
	if err != nil {
		p.log.Error("tunnel refused", "agent", conn.AgentID, "err", err)
		conn.Close()
		return
	}
	p.tunnels.Add(1)
	pid = p.system.Root.Spawn(props)
	p.tunPIDs[pid] = tunnelInfo{agent: conn.AgentID, grant: grant}
}

// Run runs a proxy with cfg until ctx ends, then closes it: a proxy
// process's life (`warren proxy`, and the proxies clustertest runs as
// processes).
func Run(ctx context.Context, cfg Config) error {
	p, err := New(cfg)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-p.drainAsked:
	}
	p.log.Info("shutting down")
	// From here a second SIGTERM (or ^C) ends the sessions at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(again)
	closed := make(chan struct{})
	defer close(closed)
	go func() {
		select {
		case <-again:
			p.log.Warn("second signal: ending the sessions now")
			p.Hurry()
		case <-closed:
		}
	}()
	return p.Close()
}

// Drain makes the proxy drain and stop, as SIGTERM does (`warren proxy
// drain`): Close, in the background. It returns how many sessions entered
// through it and get the shutdown grace.
func (p *Proxy) Drain() int {
	p.drainOnce.Do(func() {
		close(p.drainAsked)
		go p.Close()
	})
	return p.live.Len()
}

// Hurry ends a drain's grace at once: the sessions still running end.
func (p *Proxy) Hurry() { p.hurryOnce.Do(func() { close(p.hurry) }) }

// Close drains the proxy and stops it: it turns not ready, hands its
// agents' tunnels to other proxies, sends the sessions it forwards for
// other proxies onto other paths, gives the sessions that entered through
// it shutdown.grace to end (their users are told), then stops listeners,
// sessions, tunnels, the router (which persists its state), and the
// stores. A second call waits for the first.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() { p.closeErr = p.close() })
	return p.closeErr
}

func (p *Proxy) close() error {
	p.mu.Lock()
	p.closed, p.ready = true, false
	p.mu.Unlock()
	p.handOff()
	p.drain()
	if p.members != nil {
		// Others see a graceful leave at once and drop our routes.
		if err := p.members.Leave(2 * time.Second); err != nil {
			p.log.Warn("gossip leave", "err", err)
		}
		p.members.Close()
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.stopRecordingCopies()
	for _, ln := range []net.Listener{p.tunnelLn, p.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if p.httpSrv != nil {
		_ = p.httpSrv.Close()
	}
	if p.userSrv != nil {
		p.userSrv.Close()
	}
	p.wg.Wait()
	p.sessions.Wait()
	if p.system != nil {
		p.mu.Lock()
		pids := make([]*actor.PID, 0, len(p.tunPIDs))
		for pid := range p.tunPIDs {
			pids = append(pids, pid)
		}
		p.mu.Unlock()
		for _, pid := range pids {
			p.system.Root.Stop(pid)
		}
		p.tunnels.Wait()
		if p.router != nil {
			_ = p.system.Root.StopFuture(p.router).Wait()
		}
		p.rendezvous.Close()
		if p.dialer != nil {
			p.dialer.Close()
		}
		if p.farSrv != nil {
			p.farSrv.Stop()
			<-p.farDone
		}
		if p.remote != nil {
			p.remote.Shutdown(false)
		}
		p.system.Shutdown()
	}
	var errs []error
	if p.audit != nil {
		errs = append(errs, p.audit.Close())
	}
	if p.catalog != nil {
		errs = append(errs, p.catalog.Close())
	}
	errs = append(errs, p.closeRecordings())
	return errors.Join(errs...)
}

// Ready reports whether the proxy accepts new work: started and not
// closing, synced with its peers (their routes and the configuration,
// locks included), and able to write its audit log.
func (p *Proxy) Ready() bool { return p.NotReady() == "" }

// NotReady says why the proxy is not ready, or "" when it is.
func (p *Proxy) NotReady() string {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	switch {
	case !ready:
		return "starting or stopping"
	case p.members != nil && p.members.Problem() != nil:
		return "cannot join the cluster: " + p.members.Problem().Error()
	case !p.table.Snapshot().Synced:
		return "waiting for the peers' routes and configuration"
	case !p.auditOK():
		return "the audit log cannot be written; sessions are refused until it can"
	}
	return ""
}

// authorizedLines renders keys as authorized_keys lines, one per line.
func authorizedLines(keys []ssh.Signer) string {
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey())))
	}
	return strings.Join(lines, "\n")
}

// reservedName reports names no unscoped grant may claim: "localhost", IP
// addresses, and the ids and host names of the cluster's proxies.
func (p *Proxy) reservedName(name string) bool {
	if strings.EqualFold(name, "localhost") || net.ParseIP(name) != nil || name == p.cfg.ID {
		return true
	}
	hosts := []string{p.cfg.PublicAddr, p.cfg.Listen.User, p.cfg.Listen.Tunnel}
	if p.members != nil {
		for _, m := range p.members.Members() {
			if m.ProxyID == name {
				return true
			}
			hosts = append(hosts, m.UserAddr, m.TunnelAddr)
		}
	}
	for _, a := range hosts {
		if h, _, err := net.SplitHostPort(a); err == nil && strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// authorizeUser admits a user whose certificate is valid unless a lock,
// missing roles or a too long-lived certificate refuse them.
func (p *Proxy) authorizeUser(id usersh.Identity) error {
	reason := p.table.Snapshot().Policy.CheckIdentity(usercmd.AccessIdentity(id), p.cfg.Clock())
	p.metrics.decision("login", reason == "")
	if reason != "" {
		return errors.New(reason)
	}
	return nil
}

// lockGrace is how long a user connection a lock ends stays open (taking no
// new channel): time for the nodes behind it to tell the user why.
const lockGrace = 2 * time.Second

// enforce applies a new policy to what is live on this proxy: the
// connections of users it refuses now are closed, and the tunnels of
// agents locked (or whose token is). Called from the router's goroutine
// whenever the configuration changes.
func (p *Proxy) enforce(pol *access.Policy) {
	now := p.cfg.Clock()
	p.pushPolicy(pol)
	if p.userSrv != nil {
		p.userSrv.CloseConns(func(id usersh.Identity) string {
			return pol.CheckIdentity(usercmd.AccessIdentity(id), now)
		}, lockGrace)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, t := range p.tunPIDs {
		if l, ok := pol.AgentLocked(t.agent, t.grant, now); ok {
			p.system.Root.Send(pid, &tunnel.Close{Reason: l.Sentence()})
		}
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (p *Proxy) help() string {
	host, port, _ := net.SplitHostPort(p.publicAddr)
	return strings.Join([]string{
		"This is Warren proxy " + p.cfg.ID + ". It is a jump host:",
		"  ssh -J <you>@" + host + ":" + port + " <login>@<resource>",
		"Commands: ssh -p " + port + " <you>@" + host + " ls | status | whoami | audit --since 1h | recordings ls",
		"",
	}, "\n")
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}
