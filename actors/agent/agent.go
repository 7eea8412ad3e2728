// Package agent assembles a Warren agent: it joins the cluster once, keeps
// its identity in a bbolt file, keeps tunnels to proxies (a pool actor with
// one connection actor per tunnel), heartbeats its resources and serves
// them: an embedded SSH server for "ssh" resources, a forward for "tcp".
//
// Lifecycle: New(cfg) → Start(ctx) → Close().
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
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
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

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

	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards closed
	closed bool
	// connected counts live tunnels, for tests and status.
	connected atomic.Int32
	// renewTried is when a certificate renewal was last asked for (Unix ns).
	renewTried atomic.Int64
	// policy is the cluster's roles as the proxies last sent them: the SSH
	// server checks every login against them. Nil until the first tunnel's
	// hello, which comes before any session can.
	policy atomic.Pointer[access.Policy]
}

// New checks cfg and returns an agent that is not started yet.
func New(cfg Config) (*Agent, error) {
	cfg, err := cfg.CheckAndSetDefaults()
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	return &Agent{cfg: cfg, log: cfg.Logger}, nil
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
		})
		if err != nil {
			return err
		}
	}
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	static := append([]ResourceConfig(nil), a.cfg.Resources...)
	a.served.Store(&static)
	a.health = newHealth(static, a.cfg.HealthInterval, a.log)
	a.dir = newDirectory(a.cfg.Region, a.cfg.Proxies)
	if a.system = a.cfg.ActorSystem; a.system == nil {
		a.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		a.ownSystem = true
	}
	a.pool = a.system.Root.Spawn(newPoolProps(a))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.health.run(ctx, func() { a.system.Root.Send(a.pool, resourcesChanged{}) })
	}()
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

func (a *Agent) joinToken() (string, error) {
	if a.cfg.JoinTokenFile != "" {
		return readTokenFile(a.cfg.JoinTokenFile)
	}
	if a.cfg.JoinToken == "" {
		return "", errors.New("this agent has not joined yet and its config has no join_token: add one from the cluster's join_tokens file")
	}
	return a.cfg.JoinToken, nil
}

// readTokenFile reads a join token from a file only its owner may read, as
// the proxy's own token files: a token others can read is a token others
// can use. Comment lines ('#') and blank lines are skipped; the file must
// hold exactly one token.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read join_token_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read join_token_file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("join_token_file %s has mode %04o; run chmod 600 %s so that only its owner can read it", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read join_token_file: %w", err)
	}
	var toks []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			toks = append(toks, line)
		}
	}
	if len(toks) != 1 {
		return "", fmt.Errorf("join_token_file %s holds %d tokens; put exactly one token in it (from `warren token add`)", path, len(toks))
	}
	return toks[0], nil
}

// join obtains an identity through the first proxy that answers.
func (a *Agent) join(ctx context.Context) (identity.Identity, error) {
	token, err := a.joinToken()
	if err != nil {
		return identity.Identity{}, err
	}
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		return identity.Identity{}, err
	}
	hostname, _ := os.Hostname()
	req := revtunnel.JoinRequest{
		Name:       a.cfg.Name,
		Hostname:   hostname,
		PublicKey:  string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
		Principals: a.principals(),
	}
	// Proxies may start after their agents (a boot order, a rolling
	// restart): keep trying every proxy with backoff. Only a refused
	// token is final.
	for attempt := 0; ; attempt++ {
		var errs []error
		for _, addr := range a.cfg.Proxies {
			id, err := a.joinVia(ctx, addr, token, req, keyPEM)
			if err == nil {
				return id, nil
			}
			if errors.Is(err, revtunnel.ErrJoinRefused) || errors.Is(err, errSave) {
				return identity.Identity{}, err
			}
			errs = append(errs, err)
		}
		wait := backoff(a.cfg.ReconnectMin, a.cfg.ReconnectMax, attempt)
		a.log.Warn("join failed; retrying", "in", wait.Round(time.Millisecond), "err", errors.Join(errs...))
		if !sleep(ctx, wait) {
			return identity.Identity{}, fmt.Errorf("join: no proxy answered: %w", errors.Join(errs...))
		}
	}
}

var errSave = errors.New("save identity")

func (a *Agent) joinVia(ctx context.Context, addr, token string, req revtunnel.JoinRequest, keyPEM []byte) (identity.Identity, error) {
	jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	resp, ca, err := revtunnel.Join(jctx, addr, token, req, revtunnel.Trust{Pin: a.cfg.CAPin, Clock: a.cfg.Clock})
	cancel()
	if err != nil {
		return identity.Identity{}, err
	}
	if a.cfg.CAPin == "" {
		a.log.Warn("joined without ca_pin: trusting the host CA of the first proxy", "ca", ssh.FingerprintSHA256(ca))
	}
	if len(resp.Refused) > 0 {
		a.log.Error("the cluster did not grant some of this agent's names", "refused", describeRefused(resp.Refused))
	}
	now := a.cfg.Clock()
	id := identity.Identity{
		AgentID:    resp.AgentID,
		PrivateKey: keyPEM,
		HostCert:   []byte(resp.HostCert),
		HostCA:     ssh.MarshalAuthorizedKey(ca),
		UserCA:     []byte(resp.UserCA),
		Proxies:    a.cfg.Proxies,
		JoinedAt:   now,
		UpdatedAt:  now,
	}
	if err := a.store.Save(id); err != nil {
		return identity.Identity{}, fmt.Errorf("%w: %w", errSave, err)
	}
	a.log.Info("joined the cluster", "agent", id.AgentID, "via", addr)
	return id, nil
}

func (a *Agent) useIdentity(id identity.Identity) error {
	key, err := ssh.ParsePrivateKey(id.PrivateKey)
	if err != nil {
		return fmt.Errorf("identity: parse private key: %w", err)
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey(id.HostCA)
	if err != nil {
		return fmt.Errorf("identity: parse host CA: %w", err)
	}
	a.id, a.key, a.hostCA = id, key, ca
	a.signer = &renewableSigner{key: key}
	if err := a.signer.renew(id.HostCert); err != nil {
		return err
	}
	// A second, ECDSA host key for SSH clients that take no Ed25519 keys;
	// made once, kept with the identity.
	if len(id.ECDSAKey) == 0 {
		_, pemBytes, err := pki.GenerateKeyType(pki.KeyECDSA)
		if err != nil {
			return err
		}
		a.id.ECDSAKey = pemBytes
		if err := a.store.Save(a.id); err != nil {
			return fmt.Errorf("save the ECDSA host key: %w", err)
		}
	}
	if a.ecdsaKey, err = ssh.ParsePrivateKey(a.id.ECDSAKey); err != nil {
		return fmt.Errorf("identity: parse ECDSA host key: %w", err)
	}
	return nil
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

// renewCert stores a certificate a proxy issued in its hello.
func (a *Agent) renewCert(certText string) {
	if certText == "" {
		return
	}
	if err := a.signer.renew([]byte(certText)); err != nil {
		a.log.Warn("proxy sent an unusable certificate", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.id.HostCert = []byte(certText)
	a.id.UpdatedAt = a.cfg.Clock()
	if err := a.store.Save(a.id); err != nil {
		a.log.Warn("save renewed certificate", "err", err)
	}
}

// policyLearned takes the cluster's roles from a proxy.
func (a *Agent) policyLearned(set *revtunnel.PolicySet) {
	if set == nil {
		return
	}
	var roles []access.Role
	var locks []access.Lock
	if err := json.Unmarshal(set.Roles, &roles); err != nil {
		a.log.Warn("proxy sent roles that do not decode; keeping the previous ones", "err", err)
		return
	}
	if len(set.Locks) > 0 {
		if err := json.Unmarshal(set.Locks, &locks); err != nil {
			a.log.Warn("proxy sent locks that do not decode; keeping the previous ones", "err", err)
			return
		}
	}
	pol := access.NewPolicy(roles, locks, nil, nil)
	a.policy.Store(pol)
	if a.node != nil {
		// Users locked since their login: their sessions end, told why.
		now := a.cfg.Clock()
		a.node.Evict(func(ext map[string]string) string {
			if l, ok := pol.Locked(access.LockUser, ext[pki.ExtUser], now); ok {
				return l.Sentence()
			}
			return ""
		})
	}
}

// authorizeLogin is the SSH server's check of a login against the
// cluster's roles, for the resource the connection was dialed for: the
// entry proxy decided before it dialed, and the node decides again.
func (a *Agent) authorizeLogin(conn net.Conn, login string, cert *ssh.Certificate) error {
	pol, target, id, err := a.decisionInputs(conn, cert)
	if err != nil {
		return fmt.Errorf("access denied: %w", err)
	}
	if reason := pol.CheckIdentity(id, a.cfg.Clock()); reason != "" {
		return errors.New(reason)
	}
	if d := pol.Login(id, target, login); !d.Allowed {
		return errors.New(d.Reason)
	}
	return nil
}

// allowForwarding asks the cluster's roles whether the user may forward
// (ports, or their SSH agent) on the resource the connection was dialed
// for; the certificate's permit-* extensions were checked already.
func (a *Agent) allowForwarding(conn net.Conn, login string, cert *ssh.Certificate, kind string) error {
	pol, target, id, err := a.decisionInputs(conn, cert)
	if err != nil {
		return err
	}
	what := "port"
	if kind == nodessh.ForwardAgent {
		what = "agent"
	}
	if !pol.Forwarding(id, target, what) {
		return fmt.Errorf("your roles (%s) do not allow %s forwarding on %s", strings.Join(id.Roles, ", "), what, target.Name)
	}
	return nil
}

// decisionInputs gathers what an access decision on the node needs: the
// cluster's roles as the proxies pushed them, the resource the connection
// was dialed for (with the grant's labels, as the proxies route it), and
// the user as their certificate says.
func (a *Agent) decisionInputs(conn net.Conn, cert *ssh.Certificate) (*access.Policy, access.Target, access.Identity, error) {
	sc, ok := conn.(*sessionConn)
	if !ok {
		return nil, access.Target{}, access.Identity{}, errors.New("not a session dialed by a proxy")
	}
	pol := a.policy.Load()
	if pol == nil {
		return nil, access.Target{}, access.Identity{}, errors.New("this agent has not received the cluster's roles yet; try again")
	}
	var target *access.Target
	for _, r := range a.resources() {
		if r.Name == sc.resource {
			target = &access.Target{Name: r.Name, Kind: r.Kind, Labels: a.stampedLabels(r.Labels)}
		}
	}
	if target == nil {
		return nil, access.Target{}, access.Identity{}, fmt.Errorf("this agent does not serve %s", sc.resource)
	}
	user, roles := pki.UserFromCert(cert)
	id := access.Identity{User: user, Roles: roles, Logins: cert.ValidPrincipals, CertTTL: pki.CertTTL(cert)}
	return pol, *target, id, nil
}

// stampedLabels are a resource's labels as the proxies route it: with the
// labels of this agent's grant stamped on.
func (a *Agent) stampedLabels(labels map[string]string) map[string]string {
	cert := a.signer.cert()
	if cert == nil {
		return labels
	}
	g, err := access.DecodeGrant(cert.Permissions.Extensions[pki.ExtAgentGrant])
	if err != nil || len(g.Labels) == 0 {
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, g.Labels)
	return out
}

// renewDue reports whether the host certificate has passed half its life
// and no renewal was tried in the last minute (a proxy that refuses, say
// at the end of the agent's renewal grant, is not asked every heartbeat).
func (a *Agent) renewDue() bool {
	cert := a.signer.cert()
	if cert == nil || cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidBefore <= cert.ValidAfter {
		return false
	}
	now := a.cfg.Clock()
	half := time.Unix(int64(cert.ValidAfter+(cert.ValidBefore-cert.ValidAfter)/2), 0)
	if now.Before(half) || now.UnixNano()-a.renewTried.Load() < int64(time.Minute) {
		return false
	}
	a.renewTried.Store(now.UnixNano())
	return true
}

// definitionsLearned takes the cluster's dynamic resource definitions and
// serves those the agent's watchers match (static resources keep their
// names); it reports whether the served set changed.
func (a *Agent) definitionsLearned(defs []model.Definition) bool {
	next := append([]ResourceConfig(nil), a.cfg.Resources...)
	static := map[string]bool{}
	for _, r := range next {
		static[r.Name] = true
	}
	for _, d := range defs {
		if static[d.Name] || !a.watches(d) {
			continue
		}
		next = append(next, ResourceConfig{Name: d.Name, Kind: d.Kind, Addr: d.Addr, Labels: d.Labels})
	}
	cur := a.resources()
	if len(cur) == len(next) {
		same := true
		for i := range cur {
			same = same && cur[i].Name == next[i].Name && cur[i].Addr == next[i].Addr && cur[i].Kind == next[i].Kind && maps.Equal(cur[i].Labels, next[i].Labels)
		}
		if same {
			return false
		}
	}
	a.served.Store(&next)
	a.health.setResources(next)
	a.log.Info("serving resources", "static", len(a.cfg.Resources), "dynamic", len(next)-len(a.cfg.Resources))
	return true
}

// watches reports whether a definition matches one of the agent's
// watchers and its selector admits this agent.
func (a *Agent) watches(d model.Definition) bool {
	sel, err := model.ParseSelector(d.Selector)
	if err != nil || !model.Matches(sel, a.cfg.Labels) {
		return false
	}
	for _, w := range a.cfg.Watch {
		if model.Matches(w.Labels, d.Labels) {
			return true
		}
	}
	return false
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
	if a.cancel != nil {
		a.cancel()
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

// renewableSigner presents the agent's current host certificate; a proxy
// may renew it on every tunnel, and new SSH handshakes use the new one.
type renewableSigner struct {
	key ssh.Signer
	cur atomic.Pointer[ssh.Signer]
}

func (s *renewableSigner) renew(certText []byte) error {
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		return fmt.Errorf("parse host certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return errors.New("host certificate: not a certificate")
	}
	cs, err := ssh.NewCertSigner(cert, s.key)
	if err != nil {
		return fmt.Errorf("host certificate: %w", err)
	}
	s.cur.Store(&cs)
	return nil
}

func (s *renewableSigner) signer() ssh.Signer { return *s.cur.Load() }

// cert is the certificate presented now.
func (s *renewableSigner) cert() *ssh.Certificate {
	c, _ := s.signer().PublicKey().(*ssh.Certificate)
	return c
}

func (s *renewableSigner) PublicKey() ssh.PublicKey { return s.signer().PublicKey() }
func (s *renewableSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return s.signer().Sign(r, data)
}
func (s *renewableSigner) SignWithAlgorithm(r io.Reader, data []byte, alg string) (*ssh.Signature, error) {
	return s.signer().(ssh.AlgorithmSigner).SignWithAlgorithm(r, data, alg)
}
func (s *renewableSigner) Algorithms() []string {
	return s.signer().(ssh.MultiAlgorithmSigner).Algorithms()
}
