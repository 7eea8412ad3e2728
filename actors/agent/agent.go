// Package agent assembles a Warren agent: it joins the cluster once, keeps
// its identity in a bbolt file, keeps tunnels to proxies (a pool actor with
// one connection actor per tunnel), heartbeats its resources and serves
// them: an embedded SSH server for "ssh" resources, a forward for "tcp".
//
// Lifecycle: New(cfg) → Start(ctx) → Close().
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/identity"
	"github.com/warren-proxy/warren/storage/recordings"
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/resume"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// maxHeldSessions bounds the resumable sessions one agent serves at once.
const maxHeldSessions = 8192

// Version is sent to proxies in the hello.
var Version = "0.1.0-dev"

// Agent is one Warren agent process.
type Agent struct {
	cfg Config
	log *slog.Logger

	store    *identity.Store
	id       identity.Identity
	key      ssh.Signer // the Ed25519 host key its certificate is for
	ecdsaKey ssh.Signer // a plain ECDSA host key, for older clients
	signer   *renewableSigner
	hostCA   ssh.PublicKey
	node     *nodessh.Server
	health   *health
	dir      *directory
	served   atomic.Pointer[[]ResourceConfig]
	system   *actor.ActorSystem
	// ownSystem: the agent made system (Config.ActorSystem was nil) and
	// shuts it down on Close.
	ownSystem bool
	pool      *actor.PID
	// debugSrv serves profiles on debug_listen (nil when unset).
	debugSrv  *http.Server
	debugAddr net.Addr

	// ctx lives as long as the agent; resumable sessions run under it.
	ctx    context.Context
	cancel context.CancelFunc
	// held are the resumable sessions the agent serves, by id.
	held   *resume.Registry
	wg     sync.WaitGroup
	mu     sync.Mutex // guards closed
	closed bool
	// connected counts live tunnels, for tests and status.
	connected atomic.Int32
	// metrics are served on debug_listen.
	metrics *metrics
	// renewTried is when a certificate renewal was last asked for (Unix ns).
	renewTried atomic.Int64
	// policy is the cluster's roles as the proxies last sent them: the SSH
	// server checks every login against them. Nil until the first tunnel's
	// hello, which comes before any session can.
	policy atomic.Pointer[access.Policy]
	// spool and uploads keep and ship session recordings (recording.go);
	// nil without ssh resources. recFailures counts recordings that
	// could not start or broke.
	spool       *recordings.Spool
	uploads     *uploader
	recording   liveRecordings
	recFailures atomic.Uint64
}

// New checks cfg and returns an agent that is not started yet.
func New(cfg Config) (*Agent, error) {
	cfg, err := cfg.CheckAndSetDefaults()
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	a := &Agent{cfg: cfg, log: cfg.Logger}
	a.metrics = newMetrics(a)
	return a, nil
}

// Start loads (or obtains, by joining) the agent's identity and starts its
// tunnels. The first join must succeed for Start to return nil; after
// that, proxies being away only delays the tunnels.
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := a.startDebug(); err != nil {
		return err
	}
	if a.store, err = identity.Open(filepath.Join(a.cfg.DataDir, "identity.db")); err != nil {
		return err
	}
	id, ok, err := a.store.Load()
	if err != nil {
		return err
	}
	if !ok {
		if id, err = a.join(ctx); err != nil {
			return err
		}
	}
	if err := a.useIdentity(id); err != nil {
		return err
	}
	a.log = a.log.With("agent", a.id.AgentID)
	if a.needsSSH() {
		userCA, _, _, _, err := ssh.ParseAuthorizedKey(a.id.UserCA)
		if err != nil {
			return fmt.Errorf("identity: parse user CA: %w", err)
		}
		a.node, err = nodessh.New(nodessh.Config{
			// The certificate for clients that trust the agent CA, the
			// plain key for those that pin keys (`warren known-hosts`).
			HostSigners:     []ssh.Signer{a.signer, a.key, a.ecdsaKey},
			UserCAs:         []ssh.PublicKey{userCA},
			Logger:          a.log,
			Clock:           a.cfg.Clock,
			SFTPCommand:     a.cfg.SFTPCommand,
			OnLogin:         reportLogin,
			OnLoginRefused:  reportLoginRefused,
			Authorize:       a.authorizeLogin,
			AllowForwarding: a.allowForwarding,
			Record:          a.record,
		})
		if err != nil {
			return err
		}
		if a.spool, err = recordings.OpenSpool(a.cfg.Recording.SpoolDir, a.cfg.Recording.SpoolMaxBytes); err != nil {
			return err
		}
		a.uploads = newUploader(a, a.spool)
	}
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	a.ctx = ctx
	a.held = resume.NewRegistry(a.id.AgentID, maxHeldSessions)
	a.held.OnNote = a.tellSession
	static := append([]ResourceConfig(nil), a.cfg.Resources...)
	a.served.Store(&static)
	a.health = newHealth(static, a.cfg.HealthInterval, a.log)
	a.dir = newDirectory(a.cfg.Region, a.cfg.Proxies, newHomeRule(a.cfg.ProbeInterval))
	if a.system = a.cfg.ActorSystem; a.system == nil {
		a.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		a.ownSystem = true
	}
	if a.uploads != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.uploads.run(ctx)
		}()
	}
	a.pool = a.system.Root.Spawn(newPoolProps(a))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.health.run(ctx, func() { a.system.Root.Send(a.pool, resourcesChanged{}) })
	}()
	if a.cfg.TunnelStrategy == StrategyPeering {
		// Mesh mode keeps a tunnel to every proxy: nothing to choose.
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.probe(ctx)
		}()
	}
	a.log.Info("agent started", "proxies", strings.Join(a.cfg.Proxies, ","), "resources", len(a.cfg.Resources))
	return nil
}

func (a *Agent) needsSSH() bool {
	for _, r := range a.cfg.Resources {
		if r.Kind == model.KindSSH {
			return true
		}
	}
	return false
}

// principals are the names clients use for this agent's SSH host.
func (a *Agent) principals() []string {
	var out []string
	for _, r := range a.cfg.Resources {
		if r.Kind == model.KindSSH {
			out = append(out, r.Name)
		}
	}
	return out
}

// hostKeys are the plain host keys the SSH server offers, as
// authorized_keys lines (told to proxies in the hello).
func (a *Agent) hostKeys() []string {
	var out []string
	for _, k := range []ssh.Signer{a.key, a.ecdsaKey} {
		if k != nil {
			out = append(out, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey()))))
		}
	}
	return out
}

// resources are the resources served now: static and matched dynamic.
func (a *Agent) resources() []ResourceConfig { return *a.served.Load() }

// proxiesLearned takes a proxy set from a proxy; it reports whether the
// set changed.
func (a *Agent) proxiesLearned(set []revtunnel.ProxyInfo) bool {
	if len(set) > 0 && a.dir.update(set) {
		a.log.Info("proxy set", "proxies", len(set))
		return true
	}
	return false
}

// TunnelProxies returns the ids of the proxies the agent has tunnels to.
func (a *Agent) TunnelProxies() []string { return a.dir.holders() }

// ID is the agent's id (after Start).
func (a *Agent) ID() string { return a.id.AgentID }

// Tunnels is the number of live tunnels.
func (a *Agent) Tunnels() int { return int(a.connected.Load()) }

// Close stops the agent's tunnels and servers and waits for them.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	if a.held != nil {
		// Before the tunnels close: the entry proxies hear the sessions
		// end, instead of looking for a new path to this agent.
		a.held.Close(time.Second)
	}
	if a.cancel != nil {
		a.cancel()
	}
	if a.debugSrv != nil {
		a.debugSrv.Close()
	}
	if a.pool != nil {
		_ = a.system.Root.StopFuture(a.pool).Wait()
	}
	if a.ownSystem {
		a.system.Shutdown()
	}
	if a.node != nil {
		a.node.Close()
	}
	a.wg.Wait()
	if a.store != nil {
		return a.store.Close()
	}
	return nil
}

// tellSession writes an entry proxy's note on the terminal of session id
// (an ssh resource's; a tcp resource has nowhere to say it), sanitized:
// one line of printable text.
func (a *Agent) tellSession(id, text string) {
	if a.node == nil {
		return
	}
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	a.node.Tell(func(c net.Conn) bool {
		sc, ok := c.(*sessionConn)
		return ok && sc.sessionID == id
	}, "warren: "+text)
}
