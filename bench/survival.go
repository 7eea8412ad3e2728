package bench

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/bench/plot"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
)

// The survival scenario kills a proxy on the path of sessions under way
// and counts the sessions that carry on: the entry proxy and the agent run
// each session's bytes through transport/resume, so a broken hop between
// them is replaced by another path to the same agent.
//
//	user ──ssh── proxy E ──peer── proxy M ──tunnel── agent-1 ──> echo
//	                    └──peer── proxy O ──tunnel──┘
//
// One agent with connection_count 2 holds tunnels on two of three proxies
// (M and O); users enter the third (E), which holds none, so every session
// crosses a peer proxy. The cases, each on a fresh cluster:
//
//   - middle: SIGKILL M, the middle of the sessions' path (the proxy most
//     of them cross, by the entry proxy's log); they resume through O;
//   - both: SIGKILL M, wait until the agent has opened its second tunnel
//     again, on E (the only proxy left), then SIGKILL O too; the sessions
//     resume over the tunnel on E;
//   - anchor: the same load through `ssh -J b1,b2 -W echo target` (stock
//     sshd bastions and target), and SIGKILL b2;
//   - rolling: no kill, a rolling restart: every proxy restarted in turn
//     (SIGTERM, its drain, then the same proxy again) under long sessions
//     entered through every proxy and new sessions all along (see
//     runRollingOnce).
//
// The load is interactive sessions, each echoing a byte every Tick, and
// large transfers that send pseudo-random bytes to the echo server and
// hash what comes back, both on sessions opened before the warm-up.

// SurvivalConfig sizes the survival scenario.
type SurvivalConfig struct {
	// Reps is how many times each case runs, each on a fresh cluster.
	Reps int
	// Interactive is the number of sessions that each send a byte every
	// Tick and time its echo.
	Interactive int
	Tick        time.Duration
	// Transfers is the number of sessions that each send TransferBytes of
	// pseudo-random bytes, paced at TransferRate bytes per second, and
	// read them back from the echo server.
	Transfers     int
	TransferBytes int64
	TransferRate  float64
	// Warmup is how long the load runs before the first kill; Window how
	// long the interactive sessions go on after the last one. Drain is how
	// long a session may take afterwards to answer what is still in
	// flight (a transfer: to finish after its paced end) before it counts
	// as broken.
	Warmup, Window, Drain time.Duration
	// Gap is the least time between the two kills of case 2, on top of
	// waiting for the agent's new tunnel and for every session to answer.
	Gap time.Duration
	// Anchor runs the `ssh -J b1,b2` case (it needs the stock sshd).
	Anchor bool
	// Gossip is the proxies' membership profile.
	Gossip string
	// RollingReps is how many times the rolling restart runs (0: not at
	// all), each on a fresh cluster: every proxy restarted in turn
	// (SIGTERM, then the same proxy again) under long sessions entered
	// through every proxy and NewClients clients that each open a short
	// session every NewEvery through a proxy that is not restarting.
	RollingReps int
	NewClients  int
	NewEvery    time.Duration
}

// DefaultSurvivalConfig is the full run: about 3.5 minutes on 2 cores.
func DefaultSurvivalConfig() SurvivalConfig {
	return SurvivalConfig{
		Reps: 3, Interactive: 20, Tick: 20 * time.Millisecond,
		Transfers: 4, TransferBytes: 64 << 20, TransferRate: 5 << 20,
		Warmup: 3 * time.Second, Window: 4 * time.Second, Drain: 10 * time.Second, Gap: 2 * time.Second,
		Anchor: true, Gossip: model.ProfileLAN,
		RollingReps: 2, NewClients: 2, NewEvery: 100 * time.Millisecond,
	}
}

// TinySurvivalConfig only checks that the scenario runs (CI): about a
// minute.
func TinySurvivalConfig() SurvivalConfig {
	return SurvivalConfig{
		Reps: 1, Interactive: 4, Tick: 20 * time.Millisecond,
		Transfers: 2, TransferBytes: 8 << 20, TransferRate: 1 << 20,
		Warmup: 1500 * time.Millisecond, Window: 2 * time.Second, Drain: 10 * time.Second, Gap: time.Second,
		Anchor: true, Gossip: model.ProfileLAN,
		RollingReps: 1, NewClients: 2, NewEvery: 100 * time.Millisecond,
	}
}

// Validate reports every problem of the config at once.
func (c SurvivalConfig) Validate() error {
	var errs []error
	if c.Reps < 1 {
		errs = append(errs, errors.New("--reps must be at least 1"))
	}
	if c.Interactive < 1 || c.Interactive > 500 {
		errs = append(errs, errors.New("--interactive must be 1 to 500"))
	}
	if c.Transfers < 0 || c.Transfers > 64 {
		errs = append(errs, errors.New("--transfers must be 0 to 64"))
	}
	if c.TransferBytes < 1<<20 {
		errs = append(errs, errors.New("--transfer-mib must be at least 1"))
	}
	if c.TransferRate <= 0 {
		errs = append(errs, errors.New("--transfer-rate must be above 0"))
	}
	if c.Tick < time.Millisecond || c.Tick > time.Second {
		errs = append(errs, errors.New("--tick must be between 1ms and 1s"))
	}
	if c.Warmup < 500*time.Millisecond || c.Window < time.Second || c.Drain < time.Second {
		errs = append(errs, errors.New("--warmup must be at least 500ms, --window and --drain at least 1s"))
	}
	if c.Gap < 0 {
		errs = append(errs, errors.New("--gap must not be negative"))
	}
	if err := model.CheckProfile(c.Gossip); err != nil {
		errs = append(errs, fmt.Errorf("--gossip: %w", err))
	}
	if c.RollingReps < 0 || c.RollingReps > 20 {
		errs = append(errs, errors.New("--rolling-reps must be 0 to 20"))
	}
	if c.NewClients < 1 || c.NewClients > 32 {
		errs = append(errs, errors.New("--new-clients must be 1 to 32"))
	}
	if c.NewEvery < 10*time.Millisecond || c.NewEvery > 10*time.Second {
		errs = append(errs, errors.New("--new-every must be between 10ms and 10s"))
	}
	return errors.Join(errs...)
}

// survivalCase is one case of the scenario.
type survivalCase int

const (
	survMiddle survivalCase = iota // SIGKILL the middle proxy
	survBoth                       // then the agent's other original proxy too
	survAnchor                     // ssh -J b1,b2: SIGKILL b2
	numSurvivalCases
)

func (k survivalCase) key() string { return [...]string{"middle", "both", "anchor"}[k] }

// kills are the row titles of the case's kills, in order.
func (k survivalCase) kills() []string {
	switch k {
	case survMiddle:
		return []string{"1. Warren: SIGKILL the middle proxy"}
	case survBoth:
		return []string{"2a. Warren: SIGKILL the middle proxy",
			"2b. … then the agent's other original proxy, once the agent has a tunnel on the entry proxy"}
	}
	return []string{"3. ssh -J b1,b2: SIGKILL b2"}
}

// killKey names kill i of the case in the per-run table.
func (k survivalCase) killKey(i int) string {
	if k == survBoth {
		return fmt.Sprintf("both-%d", i+1)
	}
	return k.key()
}

// survivalTarget is the direct-tcpip target of Warren's sessions: the
// resource name; tcp resources ignore the port.
const survivalTarget = "svc:7"

// attribSlack: an outcome (a session's error, its first byte never
// echoed, a transfer's last read) up to this long before a kill is that
// kill's: the byte was in flight when the proxy died.
const attribSlack = 250 * time.Millisecond

// RunSurvival runs every case cfg.Reps times, each on a fresh bed.
func RunSurvival(ctx context.Context, env Env, cfg SurvivalConfig) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if cfg.Anchor {
		if _, err := SshdPath(); err != nil {
			return Report{}, fmt.Errorf("the ssh -J anchor: %w (or run with --anchor=false)", err)
		}
	}
	start := time.Now()
	var runs []*survivalRun
	for rep := 1; rep <= cfg.Reps; rep++ {
		for k := survivalCase(0); k < numSurvivalCases; k++ {
			if k == survAnchor && !cfg.Anchor {
				continue
			}
			env.progress("survival: case %s, repetition %d of %d", k.key(), rep, cfg.Reps)
			r, err := runSurvivalOnce(ctx, env, cfg, k, rep)
			if err != nil {
				return Report{}, fmt.Errorf("%s, repetition %d: %w", k.key(), rep, err)
			}
			for i := range r.kills {
				row := r.row(i)
				env.progress("survival: %s: SIGKILL %s: interactive %d/%d survived, transfers %d/%d, hashes %d/%d; stall p50 %s, max %s; %d resumes logged",
					k.killKey(i), r.kills[i].victim, row.interOK, row.interUnder, row.xferOK, row.xferUnder,
					row.hashOK, row.xferDone, fmtStall(row.stalls.Median(), len(row.stalls)), fmtStall(slices.Max(append(row.stalls, 0)), len(row.stalls)), r.kills[i].resumes)
			}
			runs = append(runs, r)
		}
	}
	var rolls []*rollingRun
	for rep := 1; rep <= cfg.RollingReps; rep++ {
		env.progress("survival: rolling restart, repetition %d of %d", rep, cfg.RollingReps)
		r, err := runRollingOnce(ctx, env, cfg, rep)
		if err != nil {
			return Report{}, fmt.Errorf("rolling restart, repetition %d: %w", rep, err)
		}
		rolls = append(rolls, r)
	}
	env.progress("survival: %d runs in %s", len(runs)+len(rolls), time.Since(start).Round(time.Second))
	return survivalReport(cfg, runs, rolls), nil
}

// survivalBed is one fresh setup for one run: what the sessions cross,
// and how to open one.
type survivalBed struct {
	dir  string
	open func(ctx context.Context) (*survStream, error)
	stop cleanups
	// Warren's: the cluster, the entry proxy and the agent's tunnels',
	// the agent, and how to open a session through any proxy.
	cluster *Cluster
	entry   *ProxyProc
	holders []*ProxyProc
	agent   *Proc
	openVia func(p *ProxyProc) (*survStream, error)
	// The anchor's second bastion.
	b2 *Sshd
}

// newSurvivalBed begins a bed: its scratch directory, named name, and a
// Warren cluster there (closed by the bed's stop). It leaves nothing
// running when it fails.
func newSurvivalBed(ctx context.Context, env Env, name string, cc ClusterConfig) (*survivalBed, *Cluster, error) {
	b := &survivalBed{}
	var err error
	if b.dir, err = env.scratch(name); err != nil {
		return nil, nil, err
	}
	c, err := StartCluster(ctx, env, b.dir, cc)
	if err != nil {
		return nil, nil, err
	}
	b.stop.add(c.Close)
	return b, c, nil
}

// setUpBed starts a bed with start, and once more on a fresh bed if that
// fails: a setup can lose a race for a port with other processes (as in
// the failover scenario).
func setUpBed(ctx context.Context, env Env, start func() (*survivalBed, error)) (*survivalBed, error) {
	b, err := start()
	if err != nil && ctx.Err() == nil {
		env.progress("survival: setting up failed, once more on a fresh bed: %v", err)
		b, err = start()
	}
	return b, err
}

// startWarrenBed starts 3 proxies and one agent with two tunnels, and
// picks the proxy that holds none as the entry.
func startWarrenBed(ctx context.Context, env Env, cfg SurvivalConfig, name string) (_ *survivalBed, err error) {
	b, c, err := newSurvivalBed(ctx, env, name, ClusterConfig{Proxies: 3, Gossip: cfg.Gossip})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.stop.run()
		}
	}()
	b.cluster = c
	echo, err := echoServer("127.0.0.1", &b.stop)
	if err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf("tunnel_strategy: proxy_peering\nconnection_count: 2\nresources:\n  - {name: svc, kind: tcp, addr: %q}\n", echo)
	if b.agent, err = c.StartAgent("agent-1", AgentConfig{Proxies: []int{0, 1, 2}, Extra: yaml}); err != nil {
		return nil, err
	}
	if err := c.WaitHealthy(ctx, "svc", 1, 30*time.Second); err != nil {
		return nil, fmt.Errorf("%w (logs in %s)", err, b.dir)
	}
	// Two tunnels, on two proxies, both routed on the third.
	var last []string
	err = waitUntil(ctx, 20*time.Second, 50*time.Millisecond, "the agent's two tunnels on two proxies, routed on the third", func() bool {
		var holders, others []*ProxyProc
		last = last[:0]
		st, err := c.Status(c.Proxies[0])
		if err != nil {
			return false
		}
		for _, p := range c.Proxies {
			for _, m := range st {
				if m.ID != p.ID {
					continue
				}
				last = append(last, fmt.Sprintf("%s: %d", m.ID, m.LocalAgents))
				if m.LocalAgents == 1 {
					holders = append(holders, p)
				} else {
					others = append(others, p)
				}
			}
		}
		if len(holders) != 2 || len(others) != 1 {
			return false
		}
		est, err := c.Status(others[0])
		if err != nil {
			return false
		}
		for _, m := range est {
			if m.Link == "self" && m.Routes >= 2 {
				b.entry, b.holders = others[0], holders
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("%w (tunnels per proxy: %s; logs in %s)", err, strings.Join(last, ", "), b.dir)
	}
	b.openVia = func(p *ProxyProc) (*survStream, error) {
		cl, err := c.Dial(p)
		if err != nil {
			return nil, fmt.Errorf("connect a user to %s: %w", p.ID, err)
		}
		conn, err := cl.Dial("tcp", survivalTarget)
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("open a session through %s: %w", p.ID, err)
		}
		s := &survStream{r: conn, w: conn, close: func() { conn.Close(); cl.Close() }}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			s.closeWrite = cw.CloseWrite
		} else {
			s.closeWrite = func() error { return errors.New("the channel cannot half-close") }
		}
		return s, nil
	}
	b.open = func(context.Context) (*survStream, error) { return b.openVia(b.entry) }
	return b, nil
}

// startAnchorBed starts three stock sshd servers, a target and two
// bastions, and an echo server; sessions are `ssh -J b1,b2 -W ECHO target`.
// A 1-proxy Warren cluster provides the user CA and certificate the stock
// servers trust (as in the path scenario); it carries no session.
func startAnchorBed(ctx context.Context, env Env, name string) (_ *survivalBed, err error) {
	b, c, err := newSurvivalBed(ctx, env, name, ClusterConfig{Proxies: 1})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.stop.run()
		}
	}()
	o, err := newOpenSSH(b.dir, c.userCA)
	if err != nil {
		return nil, err
	}
	target, b1, b2, err := o.startChain(&b.stop)
	if err != nil {
		return nil, err
	}
	b.b2 = b2
	echo, err := echoServer("127.0.0.1", &b.stop)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(b.dir, "ssh_config")
	if err := writeClientConfig(cfg, c.Login, c.User, o, []clientHost{
		{Name: "target", Addr: target.Addr}, {Name: "b1", Addr: b1.Addr}, {Name: "b2", Addr: b.b2.Addr},
	}); err != nil {
		return nil, err
	}
	b.open = func(ctx context.Context) (*survStream, error) {
		cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, "-J", "b1,b2", "-W", echo, "target")
		cmd.WaitDelay = 5 * time.Second // a ProxyJump ssh may hold the pipes a moment
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		var once sync.Once
		return &survStream{r: out, w: in, closeWrite: in.Close, stderr: stderr, close: func() {
			once.Do(func() {
				in.Close()
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
		}}, nil
	}
	return b, nil
}

// lockedBuffer is a process's stderr, read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written, its lines joined with "; ".
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(l.b.String()), "\n", " ; ")), " ")
}

// survStream is one session to the echo server: a Go SSH channel through
// Warren, or a stock ssh -W process's stdin and stdout.
type survStream struct {
	r          io.Reader
	w          io.Writer
	closeWrite func() error
	close      func()
	stderr     *lockedBuffer // the anchor's ssh, for errors
}

// wrap adds the stock client's complaint, if any, to err.
func (s *survStream) wrap(err error) error {
	if s.stderr != nil {
		if e := s.stderr.String(); e != "" {
			return fmt.Errorf("%w (ssh: %s)", err, e)
		}
	}
	return err
}

// echoSession is an interactive session: a byte every tick, each byte
// (its index mod 256) timed until its echo comes back.
type echoSession struct {
	s       *survStream
	entry   string     // the proxy it entered through (the rolling restart)
	mu      sync.Mutex // guards the fields below
	sent    []time.Time
	echoed  []time.Time
	err     error
	errAt   time.Time
	corrupt bool // a byte came back wrong, out of order or twice
	closing bool
}

// openEcho opens an interactive session with open and times its first
// byte.
func openEcho(ctx context.Context, open func(context.Context) (*survStream, error)) (*echoSession, error) {
	s, err := open(ctx)
	if err != nil {
		return nil, err
	}
	e := &echoSession{s: s}
	t0 := time.Now()
	one := []byte{0}
	if _, err = s.w.Write(one); err == nil {
		_, err = io.ReadFull(s.r, one)
	}
	if err != nil || one[0] != 0 {
		s.close()
		return nil, s.wrap(fmt.Errorf("interactive session: no echo of its first byte (%v)", err))
	}
	e.sent, e.echoed = []time.Time{t0}, []time.Time{time.Now()}
	return e, nil
}

// fail records the session's first error, unless it is closing.
func (e *echoSession) fail(err error, corrupt bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil && !e.closing {
		e.err, e.errAt, e.corrupt = e.s.wrap(err), time.Now(), corrupt
	}
}

// read takes the echoes until the stream ends.
func (e *echoSession) read() {
	buf := make([]byte, 4096)
	for {
		n, err := e.s.r.Read(buf)
		now := time.Now()
		e.mu.Lock()
		for _, c := range buf[:n] {
			i := len(e.echoed)
			switch {
			case i >= len(e.sent):
				e.mu.Unlock()
				e.fail(fmt.Errorf("a byte came back that was never sent (after %d)", i), true)
				return
			case c != byte(i):
				e.mu.Unlock()
				e.fail(fmt.Errorf("byte %d came back as %d: bytes lost or duplicated", i, c), true)
				return
			}
			e.echoed = append(e.echoed, now)
		}
		e.mu.Unlock()
		if err != nil {
			if err == io.EOF {
				err = errors.New("the session ended")
			}
			e.fail(err, false)
			return
		}
	}
}

// send writes a byte every tick until stop is closed or a write fails.
func (e *echoSession) send(tick time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		e.mu.Lock()
		if e.err != nil {
			e.mu.Unlock()
			return
		}
		i := len(e.sent)
		e.sent = append(e.sent, time.Now())
		e.mu.Unlock()
		if _, err := e.s.w.Write([]byte{byte(i)}); err != nil {
			e.fail(err, false)
			return
		}
	}
}

// drained reports whether every byte sent has come back, or the session
// failed.
func (e *echoSession) drained() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err != nil || len(e.echoed) == len(e.sent)
}

// echoedSince reports whether a byte came back at or after t (or the
// session failed).
func (e *echoSession) echoedSince(t time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err != nil || !e.echoed[len(e.echoed)-1].Before(t)
}

// shut closes the session; errors from here on are its own close's.
func (e *echoSession) shut() {
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	e.s.close()
}

// brokeAt is when the session broke: its error, or the send time of its
// first byte that never came back; zero if it did not.
func (e *echoSession) brokeAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.err != nil:
		return e.errAt
	case len(e.echoed) < len(e.sent):
		return e.sent[len(e.echoed)]
	}
	return time.Time{}
}

// stall is the longest any byte waited for its echo among the bytes
// still in flight at from or sent after it: those echoed before
// echoedBefore and sent before sentBefore (zero: no bound).
func (e *echoSession) stall(from, echoedBefore, sentBefore time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	var worst time.Duration
	for i, at := range e.echoed {
		if at.Before(from) || (!echoedBefore.IsZero() && !at.Before(echoedBefore)) ||
			(!sentBefore.IsZero() && !e.sent[i].Before(sentBefore)) {
			continue
		}
		worst = max(worst, at.Sub(e.sent[i]))
	}
	return worst
}

// roundTrips are the waits of the bytes echoed in [from, to).
func (e *echoSession) roundTrips(from, to time.Time) Durations {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out Durations
	for i, at := range e.echoed {
		if !e.sent[i].Before(from) && at.Before(to) {
			out = append(out, at.Sub(e.sent[i]))
		}
	}
	return out
}

// transfer is a large transfer: size pseudo-random bytes to the echo
// server, paced, hashed as sent and as they come back.
type transfer struct {
	s     *survStream
	index int
	size  int64
	rate  float64
	// entry is the proxy it entered through (the rolling restart); stop,
	// if set, ends the sending early: the transfer is then the bytes sent
	// until it closed (size only bounds it).
	entry string
	stop  <-chan struct{}

	mu         sync.Mutex // guards the fields below
	start      time.Time
	lastRead   time.Time
	received   int64
	done       time.Time // set when it ended, well or not
	complete   bool      // every byte came back, then the end of the stream
	hashOK     bool
	err        error
	errAt      time.Time
	closing    bool
	finished   chan struct{}
	finishOnce sync.Once
}

// openTransfer opens a transfer's session with open and checks it with
// one byte there and back (not part of the transfer).
func openTransfer(ctx context.Context, open func(context.Context) (*survStream, error), index int, cfg SurvivalConfig) (*transfer, error) {
	s, err := open(ctx)
	if err != nil {
		return nil, err
	}
	one := []byte{'?'}
	if _, err = s.w.Write(one); err == nil {
		_, err = io.ReadFull(s.r, one)
	}
	if err != nil || one[0] != '?' {
		s.close()
		return nil, s.wrap(fmt.Errorf("transfer session: no echo of its first byte (%v)", err))
	}
	return &transfer{s: s, index: index, size: cfg.TransferBytes, rate: cfg.TransferRate, finished: make(chan struct{})}, nil
}

// transferSource is transfer i's pseudo-random bytes.
func transferSource(i int) io.Reader {
	var seed [32]byte
	seed[0], seed[1] = 's', byte(i)
	return rand.NewChaCha8(seed)
}

// run sends and checks the transfer; it returns when the transfer has
// ended (check finished for the outcome).
func (t *transfer) run() {
	t.mu.Lock()
	t.start = time.Now()
	t.lastRead = t.start
	t.mu.Unlock()
	type sentSum struct {
		sum [32]byte
		n   int64
	}
	sent := make(chan sentSum, 1)
	go func() {
		h := sha256.New()
		src := transferSource(t.index)
		buf := make([]byte, 32<<10)
		var n int64
	sending:
		for n < t.size {
			if due := t.start.Add(time.Duration(float64(n) / t.rate * float64(time.Second))); time.Until(due) > 0 {
				select {
				case <-t.finished:
					return
				case <-t.stop: // nil: never
					break sending
				case <-time.After(time.Until(due)):
				}
			}
			select {
			case <-t.stop:
				break sending
			default:
			}
			chunk := buf[:min(int64(len(buf)), t.size-n)]
			io.ReadFull(src, chunk)
			h.Write(chunk)
			if _, err := t.s.w.Write(chunk); err != nil {
				t.end(fmt.Errorf("write after %d bytes: %w", n, err), false, false)
				return
			}
			n += int64(len(chunk))
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		sent <- sentSum{sum, n}
		if err := t.s.closeWrite(); err != nil {
			t.end(fmt.Errorf("half-close after sending: %w", err), false, false)
		}
	}()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for {
		n, err := t.s.r.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			t.mu.Lock()
			t.received += int64(n)
			t.lastRead = time.Now()
			over := t.received > t.size
			t.mu.Unlock()
			if over {
				t.end(fmt.Errorf("more bytes came back than were sent: bytes duplicated"), true, false)
				return
			}
		}
		if err == nil {
			continue
		}
		t.mu.Lock()
		got := t.received
		t.mu.Unlock()
		if err != io.EOF {
			t.end(fmt.Errorf("read after %d bytes: %w", got, err), false, false)
			return
		}
		var (
			want sentSum
			have bool
		)
		select {
		case want, have = <-sent:
		default:
		}
		switch {
		case have && got < want.n:
			t.end(fmt.Errorf("the session ended after %d of %d bytes", got, want.n), false, false)
		case have && got > want.n:
			t.end(fmt.Errorf("%d bytes came back of %d sent: bytes duplicated", got, want.n), true, false)
		case have:
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			t.end(nil, true, sum == want.sum)
		case t.stop != nil:
			t.end(fmt.Errorf("the session ended after %d bytes, before the last was sent", got), false, false)
		case got < t.size:
			t.end(fmt.Errorf("the session ended after %d of %d bytes", got, t.size), false, false)
		default:
			t.end(errors.New("the stream ended before its last byte was sent"), true, false)
		}
		return
	}
}

// end records the transfer's outcome once; complete says every byte came
// back (whether or not they were the bytes sent: hashOK).
func (t *transfer) end(err error, complete, hashOK bool) {
	t.finishOnce.Do(func() {
		t.mu.Lock()
		t.done = time.Now()
		if t.closing && err != nil {
			err = errors.New("did not finish in time")
		}
		t.complete, t.hashOK = complete, hashOK
		if err != nil {
			t.err, t.errAt = t.s.wrap(err), t.done
			if t.closing {
				// Stalled: it broke when it last made progress.
				t.errAt = t.lastRead
			}
		}
		t.mu.Unlock()
		close(t.finished)
	})
}

// shut closes the transfer's session; one that has not finished by now
// counts as broken where it last made progress.
func (t *transfer) shut() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.s.close()
	t.end(errors.New("did not finish in time"), false, false)
}

// outcome is the transfer's result: when it ended, whether it broke (and
// when), whether its hash matched.
func (t *transfer) outcome() (start, done time.Time, brokeAt time.Time, complete, hashOK bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		brokeAt = t.errAt
	}
	return t.start, t.done, brokeAt, t.complete, t.hashOK, t.err
}

// openSessions opens interactive sessions and transfers with open, four
// at a time, the transfers numbered from firstTransfer; each records
// entry, the proxy it entered through ("" but in the rolling restart). It
// returns the sessions and transfers that opened, and the errors of those
// that did not.
func openSessions(ctx context.Context, cfg SurvivalConfig, open func(context.Context) (*survStream, error), entry string,
	interactive, transfers, firstTransfer int) ([]*echoSession, []*transfer, error) {
	es, ts := make([]*echoSession, interactive), make([]*transfer, transfers)
	var (
		mu    sync.Mutex
		errs  []error
		wg    sync.WaitGroup
		slots = make(chan struct{}, 4)
	)
	for i := range interactive + transfers {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			var err error
			if i < interactive {
				var e *echoSession
				if e, err = openEcho(ctx, open); err == nil {
					e.entry = entry
					es[i] = e
				}
			} else {
				var t *transfer
				if t, err = openTransfer(ctx, open, firstTransfer+i-interactive, cfg); err == nil {
					t.entry = entry
					ts[i-interactive] = t
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return slices.DeleteFunc(es, func(e *echoSession) bool { return e == nil }),
		slices.DeleteFunc(ts, func(t *transfer) bool { return t == nil }), errors.Join(errs...)
}

// shutAll closes every session and transfer (see echoSession.shut and
// transfer.shut).
func shutAll(sessions []*echoSession, transfers []*transfer) {
	for _, e := range sessions {
		e.shut()
	}
	for _, t := range transfers {
		t.shut()
	}
}

// everySession reports whether ok holds for every session.
func everySession(sessions []*echoSession, ok func(e *echoSession) bool) bool {
	for _, e := range sessions {
		if !ok(e) {
			return false
		}
	}
	return true
}

// waitAnswered waits, 10 s at most, until every session has echoed a byte
// at or after t (or broke); what names the wait.
func waitAnswered(ctx context.Context, sessions []*echoSession, t time.Time, what string) {
	_ = waitUntil(ctx, 10*time.Second, 20*time.Millisecond, what, func() bool {
		return everySession(sessions, func(e *echoSession) bool { return e.echoedSince(t) })
	})
}

// sessionLoad runs the load of long sessions: each interactive session
// sends a byte every tick and reads its echoes, each transfer runs, until
// stop (an open-ended transfer's stop channel is stopSend).
type sessionLoad struct {
	tick     time.Duration
	stopSend chan struct{}
	stopped  bool
	wg       sync.WaitGroup
}

func newSessionLoad(tick time.Duration) *sessionLoad {
	return &sessionLoad{tick: tick, stopSend: make(chan struct{})}
}

// start sets the sessions and transfers going.
func (l *sessionLoad) start(sessions []*echoSession, transfers []*transfer) {
	for _, e := range sessions {
		l.wg.Add(2)
		go func() { defer l.wg.Done(); e.read() }()
		go func() { defer l.wg.Done(); e.send(l.tick, l.stopSend) }()
	}
	for _, t := range transfers {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); t.run() }()
	}
}

// stop ends the sending; calls after the first do nothing.
func (l *sessionLoad) stop() {
	if !l.stopped {
		close(l.stopSend)
		l.stopped = true
	}
}

// finish, after stop, gives what is still in flight its time to come
// back: the interactive sessions have drain, then are shut; the transfers
// have drain from then, or from their paced end if pacedEnd is set, and
// one not finished by then is shut (it counts as broken). It returns once
// the load's goroutines have ended, or the context's error.
func (l *sessionLoad) finish(ctx context.Context, sessions []*echoSession, transfers []*transfer, drain time.Duration, pacedEnd time.Time) error {
	_ = waitUntil(ctx, drain, 20*time.Millisecond, "the interactive sessions to drain", func() bool {
		return everySession(sessions, (*echoSession).drained)
	})
	for _, e := range sessions {
		e.shut()
	}
	wait := drain
	if !pacedEnd.IsZero() {
		wait += time.Until(pacedEnd)
	}
	deadline := time.After(wait)
	for _, t := range transfers {
		select {
		case <-t.finished:
		case <-deadline:
			t.shut()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, t := range transfers {
		t.shut() // ends nothing that finished; closes its session
	}
	l.wg.Wait()
	return nil
}

// brokenEarly lists the sessions and transfers that broke before the
// first kill or restart (index places their break before it: -1), with
// their errors; through names the proxy each entered through.
func brokenEarly(sessions []*echoSession, transfers []*transfer, index func(time.Time) int, through bool) []string {
	name := func(kind string, i int, entry string) string {
		if through {
			return fmt.Sprintf("%s %d (through %s)", kind, i, entry)
		}
		return fmt.Sprintf("%s %d", kind, i)
	}
	var out []string
	for i, e := range sessions {
		if at := e.brokeAt(); !at.IsZero() && index(at) < 0 {
			out = append(out, fmt.Sprintf("%s: %v", name("interactive", i, e.entry), e.err))
		}
	}
	for _, t := range transfers {
		if _, _, at, _, _, err := t.outcome(); !at.IsZero() && index(at) < 0 {
			out = append(out, fmt.Sprintf("%s: %v", name("transfer", t.index, t.entry), err))
		}
	}
	return out
}

// eventIndex is the event (a kill, a restart) an outcome at t belongs to,
// of n events, event i at at(i), in order: the last one at or before t
// (with attribSlack), or -1 before the first.
func eventIndex(t time.Time, n int, at func(i int) time.Time) int {
	idx := -1
	for i := range n {
		if !t.Add(attribSlack).Before(at(i)) {
			idx = i
		}
	}
	return idx
}

// killRecord is one SIGKILL of a run.
type killRecord struct {
	at     time.Time
	victim string // the process killed
	// crossing counts the sessions whose path crossed the victim at the
	// kill (by the entry proxy's log; the anchor: all of them).
	crossing, live int
	// resumes counts the "session resumed" lines the entry proxy logged
	// after this kill, until the next one or the end; stalls are their
	// stalled fields.
	resumes int
	stalls  Durations
	// rehomed: for the first kill of case both, how long after it the
	// agent's tunnel was up on the entry proxy (-1: not within 20 s).
	rehomed time.Duration
}

// survivalRun is what one repetition of one case measured.
type survivalRun struct {
	kind      survivalCase
	rep       int
	entry     string   // the entry proxy ("-": the anchor)
	holders   []string // the agent's tunnels' proxies at the start
	loadStart time.Time
	end       time.Time // when the interactive load stopped
	kills     []killRecord
	sessions  []*echoSession
	transfers []*transfer
	// early are sessions that broke before any kill: a problem of the
	// bench, reported in the notes.
	early []string
	dir   string
}

// runSurvivalOnce runs one case on a fresh bed.
func runSurvivalOnce(ctx context.Context, env Env, cfg SurvivalConfig, kind survivalCase, rep int) (*survivalRun, error) {
	name := fmt.Sprintf("survival-%s-%d", kind.key(), rep)
	b, err := setUpBed(ctx, env, func() (*survivalBed, error) {
		if kind == survAnchor {
			return startAnchorBed(ctx, env, name)
		}
		return startWarrenBed(ctx, env, cfg, name)
	})
	if err != nil {
		return nil, err
	}
	defer b.stop.run()
	run := &survivalRun{kind: kind, rep: rep, entry: "-", dir: b.dir}
	if b.entry != nil {
		run.entry = b.entry.ID
		for _, h := range b.holders {
			run.holders = append(run.holders, h.ID)
		}
		env.progress("survival: entry %s, the agent's tunnels on %s (logs in %s)", run.entry, strings.Join(run.holders, " and "), b.dir)
	}

	// Open every session before the clock starts, a few at a time.
	var openErr error
	run.sessions, run.transfers, openErr = openSessions(ctx, cfg, b.open, "", cfg.Interactive, cfg.Transfers, 0)
	defer func() { shutAll(run.sessions, run.transfers) }()
	if openErr != nil {
		return nil, fmt.Errorf("open the sessions: %w (logs in %s)", openErr, b.dir)
	}

	load := newSessionLoad(cfg.Tick)
	run.loadStart = time.Now()
	load.start(run.sessions, run.transfers)
	defer load.stop()
	if !sleepCtx(ctx, cfg.Warmup) {
		return nil, ctx.Err()
	}

	var logPath string
	if b.entry != nil {
		logPath = b.entry.Logs[len(b.entry.Logs)-1]
	}
	// kill SIGKILLs one process and records what crossed it.
	kill := func(victim string, do func()) error {
		k := killRecord{victim: victim, rehomed: -1}
		if logPath != "" {
			el, err := readEntryLog(logPath)
			if err != nil {
				return err
			}
			k.live, k.crossing = len(el.live), el.crossing(victim)
			// The previous kill's resumes end here.
			if n := len(run.kills); n > 0 {
				prev := &run.kills[n-1]
				prev.stalls = el.resumed[resumedBefore(run.kills):]
				prev.resumes = len(prev.stalls)
			}
		} else {
			k.live, k.crossing = cfg.Interactive+cfg.Transfers, cfg.Interactive+cfg.Transfers
		}
		k.at = time.Now()
		do()
		env.progress("survival: SIGKILL %s at %s UTC (%d of %d sessions crossed it)", victim, k.at.UTC().Format("15:04:05.000"), k.crossing, k.live)
		run.kills = append(run.kills, k)
		return nil
	}
	switch kind {
	case survAnchor:
		if err := kill(b.b2.Name, func() { b.b2.Proc.StopWith(syscall.SIGKILL) }); err != nil {
			return nil, err
		}
	default:
		el, err := readEntryLog(logPath)
		if err != nil {
			return nil, err
		}
		// The middle: the holder that most sessions cross.
		middle, other := b.holders[0], b.holders[1]
		if el.crossing(other.ID) > el.crossing(middle.ID) {
			middle, other = other, middle
		}
		if err := kill(middle.ID, middle.Proc.Kill); err != nil {
			return nil, err
		}
		if kind == survBoth {
			k1 := run.kills[0].at
			// The agent opens its second tunnel again: on the entry
			// proxy, the only one left.
			werr := waitUntil(ctx, 20*time.Second, 20*time.Millisecond, "the agent's tunnel on the entry proxy", func() bool {
				st, err := b.cluster.Status(b.entry)
				if err != nil {
					return false
				}
				for _, m := range st {
					if m.Link == "self" && m.LocalAgents >= 1 {
						return true
					}
				}
				return false
			})
			if werr == nil {
				run.kills[0].rehomed = time.Since(k1)
			} else {
				env.progress("survival: %v; killing %s all the same", werr, other.ID)
			}
			// Every session has answered since the first kill (or
			// broke), so that the second kill finds them resumed.
			waitAnswered(ctx, run.sessions, k1, "every session to answer after the first kill")
			if !sleepCtx(ctx, time.Until(k1.Add(cfg.Gap))) {
				return nil, ctx.Err()
			}
			if err := kill(other.ID, other.Proc.Kill); err != nil {
				return nil, err
			}
		}
	}
	if !sleepCtx(ctx, cfg.Window) {
		return nil, ctx.Err()
	}
	load.stop()
	run.end = time.Now()
	// What is still in flight has Drain to come back; transfers have
	// until their paced end, plus Drain.
	paced := run.loadStart.Add(time.Duration(float64(cfg.TransferBytes) / cfg.TransferRate * float64(time.Second)))
	if err := load.finish(ctx, run.sessions, run.transfers, cfg.Drain, paced); err != nil {
		return nil, err
	}
	if logPath != "" {
		el, err := readEntryLog(logPath)
		if err != nil {
			return nil, err
		}
		last := &run.kills[len(run.kills)-1]
		last.stalls = el.resumed[resumedBefore(run.kills):]
		last.resumes = len(last.stalls)
	}
	run.early = brokenEarly(run.sessions, run.transfers, run.killIndex, false)
	return run, nil
}

// resumedBefore counts the resumes the kills so far have been given.
func resumedBefore(kills []killRecord) int {
	n := 0
	for _, k := range kills[:len(kills)-1] {
		n += k.resumes
	}
	return n
}

// killIndex is the kill an outcome at t belongs to: the last one at or
// before t (with attribSlack), or -1 before the first.
func (r *survivalRun) killIndex(t time.Time) int {
	return eventIndex(t, len(r.kills), func(i int) time.Time { return r.kills[i].at })
}

// survivedTally is what one kill or restart did to the sessions under
// way, as the SIGKILL cases and the rolling restart both count it: the
// interactive sessions and transfers under way and those of them that
// survived, the survivors' stalls, the broken ones whose bytes came back
// wrong, and the first errors.
type survivedTally struct {
	interUnder, interOK int
	xferUnder, xferOK   int
	corrupt             int // sessions or transfers whose bytes came back wrong
	stalls              Durations
	errs                []string
}

// countSession counts interactive session e, under way at the kill or
// restart at from: it survived, with its stall from then on (bounded as
// echoSession.stall says), or it broke then, its error among the first 3
// of errs, after label, with its time after from.
func (t *survivedTally) countSession(e *echoSession, survived bool, from, echoedBefore, sentBefore time.Time, label string) {
	t.interUnder++
	if survived {
		t.interOK++
		t.stalls = append(t.stalls, e.stall(from, echoedBefore, sentBefore))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.corrupt {
		t.corrupt++
	}
	if e.err != nil && len(t.errs) < 3 {
		t.errs = append(t.errs, fmt.Sprintf("%s+%s: %v", label, e.errAt.Sub(from).Round(time.Millisecond), e.err))
	}
}

// countTransfer counts a transfer under way at the kill or restart at
// from: it survived, or it broke at brokeAt with err, among the first 5
// errors, after label.
func (t *survivedTally) countTransfer(survived bool, from, brokeAt time.Time, err error, label string) {
	t.xferUnder++
	if survived {
		t.xferOK++
	} else if err != nil && len(t.errs) < 5 {
		t.errs = append(t.errs, fmt.Sprintf("%s+%s: %v", label, brokeAt.Sub(from).Round(time.Millisecond), err))
	}
}

// add sums another tally's counts and stalls (not its errors) into t.
func (t *survivedTally) add(o survivedTally) {
	t.interUnder, t.interOK = t.interUnder+o.interUnder, t.interOK+o.interOK
	t.xferUnder, t.xferOK = t.xferUnder+o.xferUnder, t.xferOK+o.xferOK
	t.corrupt += o.corrupt
	t.stalls = append(t.stalls, o.stalls...)
}

// survivalRow is what one kill of one run did to the sessions under way.
type survivalRow struct {
	survivedTally
	xferDone, hashOK     int
	checked              int64     // bytes of the transfers whose hash matched
	before               Durations // round trips in the warm-up (first kill only)
	crossing, live       int
	resumes              int
	loggedStall, rehomed Durations
}

// row tallies kill i of the run: the sessions under way at it (not
// broken before it), those of them that did not break at it, and the
// survivors' stalls from the kill until the next one (or the end).
func (r *survivalRun) row(i int) survivalRow {
	k := r.kills[i]
	// A kill's stalls are the echoes from it until the next kill (by
	// which every session had answered since this one), or of the bytes
	// sent until the end of the load.
	var echoedBefore, sentBefore time.Time
	if i+1 < len(r.kills) {
		echoedBefore = r.kills[i+1].at
	} else {
		sentBefore = r.end
	}
	row := survivalRow{crossing: k.crossing, live: k.live, resumes: k.resumes, loggedStall: k.stalls}
	if k.rehomed >= 0 {
		row.rehomed = Durations{k.rehomed}
	}
	for _, e := range r.sessions {
		at := e.brokeAt()
		if !at.IsZero() && r.killIndex(at) < i {
			continue // broke before this kill
		}
		row.countSession(e, at.IsZero() || r.killIndex(at) > i, k.at, echoedBefore, sentBefore, "")
	}
	if i == 0 {
		for _, e := range r.sessions {
			row.before = append(row.before, e.roundTrips(r.loadStart.Add(500*time.Millisecond), k.at)...)
		}
	}
	for _, t := range r.transfers {
		_, done, at, complete, hashOK, err := t.outcome()
		if (!at.IsZero() && r.killIndex(at) < i) || (at.IsZero() && done.Before(k.at)) {
			continue // broke or finished before this kill
		}
		row.countTransfer(at.IsZero() || r.killIndex(at) > i, k.at, at, err, "transfer ")
		if complete {
			row.xferDone++
			if hashOK {
				row.hashOK++
				row.checked += t.size
			} else {
				row.corrupt++
			}
		}
	}
	return row
}

// add sums another row into r.
func (r *survivalRow) add(o survivalRow) {
	r.survivedTally.add(o.survivedTally)
	r.xferDone, r.hashOK = r.xferDone+o.xferDone, r.hashOK+o.hashOK
	r.checked += o.checked
	r.before = append(r.before, o.before...)
	r.crossing, r.live, r.resumes = r.crossing+o.crossing, r.live+o.live, r.resumes+o.resumes
	r.loggedStall, r.rehomed = append(r.loggedStall, o.loggedStall...), append(r.rehomed, o.rehomed...)
}

// entryLog is what the entry proxy's log says of its sessions.
type entryLog struct {
	live    map[string]string // session id → its path now ("entry>peer>agent")
	resumed Durations         // the stalled field of every "session resumed", in order
}

// crossing counts the live sessions whose path crosses proxy id.
func (l entryLog) crossing(id string) int {
	n := 0
	for _, p := range l.live {
		if parts := strings.Split(p, ">"); len(parts) == 3 && parts[1] == id {
			n++
		}
	}
	return n
}

// readEntryLog replays the session lines of a proxy's log (slog's text
// format): "session started" and "session resumed" set a session's path,
// "session ended" drops it.
func readEntryLog(path string) (entryLog, error) {
	l := entryLog{live: map[string]string{}}
	f, err := os.Open(path)
	if err != nil {
		return l, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="session `) {
			continue
		}
		kv := logfmt(line)
		id := kv["session"]
		switch kv["msg"] {
		case "session started":
			l.live[id] = kv["path"]
		case "session resumed":
			l.live[id] = kv["path"]
			d, _ := time.ParseDuration(kv["stalled"])
			l.resumed = append(l.resumed, d)
		case "session ended":
			delete(l.live, id)
		}
	}
	return l, sc.Err()
}

// logfmt splits a line of slog's text format into its keys and values.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			break
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end+1, len(rest))
			if v, err := strconv.Unquote(rest[:end]); err == nil {
				val = v
			} else {
				val = rest[:end]
			}
			rest = rest[end:]
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		out[key] = val
		line = rest
	}
	return out
}

// fmtStall formats a stall figure, "-" without samples.
func fmtStall(d time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	if d < time.Second {
		return ms(d)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// frac is "a/b".
func frac(a, b int) string { return fmt.Sprintf("%d/%d", a, b) }

// survivalReport builds the tables and plots from every run.
func survivalReport(cfg SurvivalConfig, runs []*survivalRun, rolls []*rollingRun) Report {
	summary := Table{
		Name:  "survival",
		Title: fmt.Sprintf("Session survival: SIGKILL of a proxy on the path of sessions under way (%d repetitions per case, a fresh cluster each)", cfg.Reps),
		Header: []string{"case", "sessions crossing the killed process", "interactive survived", "transfers survived",
			"hashes matched", "bytes checked end to end", "stall p50", "stall p95", "stall max", "resumes logged", "round trip before the kill (p50 / p99)"},
	}
	perRun := Table{
		Name:  "survival-runs",
		Title: "Session survival: every repetition",
		Header: []string{"case", "rep", "entry", "agent's tunnels", "killed", "crossing", "interactive survived", "transfers survived",
			"hashes matched", "stall p50", "stall p95", "stall max", "resumes logged", "logged stall p50 / max", "agent's tunnel on the entry after"},
	}
	var (
		cdf             []plot.Series
		labels          []string
		interOK, xferOK = plot.Series{Name: "interactive sessions"}, plot.Series{Name: "transfers"}
		failures, early []string
		warren          survivalRow // every Warren kill
	)
	pct := func(a, b int) float64 {
		if b == 0 {
			return 0
		}
		return 100 * float64(a) / float64(b)
	}
	for k := survivalCase(0); k < numSurvivalCases; k++ {
		for i, title := range k.kills() {
			var sum survivalRow
			seen := false
			for _, r := range runs {
				if r.kind != k || i >= len(r.kills) {
					continue
				}
				seen = true
				row := r.row(i)
				sum.add(row)
				if k != survAnchor {
					warren.add(row)
				}
				logged, rehomed, resumes := "-", "-", "-"
				if k != survAnchor {
					resumes = fmt.Sprint(row.resumes)
					if len(row.loggedStall) > 0 {
						logged = fmtStall(row.loggedStall.Median(), 1) + " / " + fmtStall(slices.Max(row.loggedStall), 1)
					}
					if k == survBoth && i == 0 {
						rehomed = fmtConvergence(r.kills[i].rehomed)
					}
				}
				perRun.Rows = append(perRun.Rows, []string{k.killKey(i), fmt.Sprint(r.rep), r.entry, orDash(strings.Join(r.holders, ", ")),
					r.kills[i].victim, frac(row.crossing, row.live), frac(row.interOK, row.interUnder), frac(row.xferOK, row.xferUnder),
					frac(row.hashOK, row.xferDone), fmtStall(row.stalls.Median(), len(row.stalls)), fmtStall(row.stalls.Quantile(0.95), len(row.stalls)),
					fmtStall(slices.Max(append(row.stalls, 0)), len(row.stalls)), resumes, logged, rehomed})
				for _, e := range row.errs {
					failures = append(failures, fmt.Sprintf("%s rep %d, %s", k.killKey(i), r.rep, e))
				}
			}
			if !seen {
				continue
			}
			resumes := "-"
			if k != survAnchor {
				resumes = fmt.Sprint(sum.resumes)
			}
			before := "-"
			if len(sum.before) > 0 {
				before = ms(sum.before.Median()) + " / " + ms(sum.before.Quantile(0.99))
			}
			summary.Rows = append(summary.Rows, []string{title, frac(sum.crossing, sum.live),
				frac(sum.interOK, sum.interUnder), frac(sum.xferOK, sum.xferUnder), frac(sum.hashOK, sum.xferDone), sizeName(sum.checked),
				fmtStall(sum.stalls.Median(), len(sum.stalls)), fmtStall(sum.stalls.Quantile(0.95), len(sum.stalls)),
				fmtStall(slices.Max(append(sum.stalls, 0)), len(sum.stalls)), resumes, before})
			label := [...][]string{{"1. Warren: the middle proxy"},
				{"2. Warren: the middle proxy", "2. Warren: then the agent's other original proxy"},
				{"3. ssh -J b1,b2: b2"}}[k][i]
			labels = append(labels, label)
			interOK.Values = append(interOK.Values, pct(sum.interOK, sum.interUnder))
			xferOK.Values = append(xferOK.Values, pct(sum.xferOK, sum.xferUnder))
			if len(sum.stalls) > 0 {
				cdf = append(cdf, plot.Series{Name: label, Values: sum.stalls.Millis()})
			}
		}
	}
	for _, r := range runs {
		for _, e := range r.early {
			early = append(early, fmt.Sprintf("%s rep %d, %s", r.kind.key(), r.rep, e))
		}
	}
	summary.Notes = []string{
		fmt.Sprintf("Setup (Warren): 3 proxies (gossip profile `%s`, other settings at their defaults: session.resume_timeout 1m, attempt timeout 3s), one agent with `connection_count: 2` "+
			"(proxy_peering, heartbeat 1s, reconnect 50ms-1s) serving `svc`, a tcp resource on an echo server. The agent's tunnels land on two proxies; the users enter the third, "+
			"which holds none, so every session crosses a peer proxy that holds one of the tunnels. The middle is the tunnel holder that most sessions cross at the kill, "+
			"by the entry proxy's log (sessions prefer the agent's newest tunnel, so usually all of them). Case 2 kills the middle, waits until the agent has a tunnel on the entry proxy "+
			"(re-homed: the only proxy left), every session has answered again and at least %s has passed, then kills the agent's other original proxy. A fresh cluster for every case and repetition.", cfg.Gossip, cfg.Gap),
		fmt.Sprintf("Load: %d interactive sessions, each on an SSH connection of its own (Go's x/crypto/ssh, a direct-tcpip channel to svc), sending one byte every %s and timing its echo; "+
			"%d transfers, each on its own connection, sending %s of pseudo-random bytes paced at %s and reading them back from the echo server, hashed (SHA-256) both ways and compared at the end, "+
			"the end of the stream included (so a byte lost, changed or repeated shows). Every session is open and has carried a byte before the load starts; %s of load before the first kill, "+
			"interactive load until %s after the last; then a session has %s to answer what is in flight, a transfer %s after its paced end.",
			cfg.Interactive, cfg.Tick, cfg.Transfers, sizeName(cfg.TransferBytes), rateMiB(cfg.TransferRate), cfg.Warmup, cfg.Window, cfg.Drain, cfg.Drain),
		"Survived: of the sessions under way at the kill (open and not broken before it), those that did not break then: no error, every byte back in order, every transfer complete with its hash. " +
			"Bytes checked: the transfers under way at the kill that came back whole with their hash, each counted once per kill it crossed. " +
			"Stall, per interactive session that survived: the longest any byte waited for its echo among the bytes in flight at the kill or sent after it, until the next kill (or the end): " +
			"from the kill to the first echo after it, give or take one tick; between the two kills of case 2, the echoes before the second. Sessions crossing the killed process: those whose path crossed it at the kill, by the entry proxy's log of session paths, of all its live sessions. " +
			"Resumes logged: \"session resumed\" lines of the entry proxy between this kill and the next (or the end); one per session that resumed. Round trip before: every echo of the warm-up after its first 500 ms.",
	}
	if cfg.Anchor {
		summary.Notes = append(summary.Notes,
			"Anchor: the same load through `ssh -J b1,b2 -W ECHO target`, the stock OpenSSH client (one process per session, its two ProxyJump processes) through two stock sshd bastions to a stock sshd target "+
				"(which stands where the agent does) that forwards to the same kind of echo server; cipher "+Cipher+". The kill is SIGKILL of b2's listening sshd, then at once its per-connection processes "+
				"(the harness's Stop: SIGTERM, SIGKILL after 2 s), as when its host dies: a killed listener alone leaves its connections' processes running. Every session crosses b2.")
	}
	// The goals, over every Warren kill.
	allSurvived := warren.interOK == warren.interUnder && warren.xferOK == warren.xferUnder
	summary.Notes = append(summary.Notes, fmt.Sprintf("Goals (issue), over every Warren kill; measured and reported, never asserted: 100%% of sessions survive (%s of interactive, %s of transfers: %s); "+
		"zero bytes lost or duplicated (%d sessions or transfers with bytes wrong: %s); stall p95 ≤ 3 s (%s: %s), p50 ≤ 1 s (%s: %s).",
		frac(warren.interOK, warren.interUnder), frac(warren.xferOK, warren.xferUnder), goalMet(allSurvived),
		warren.corrupt, goalMet(warren.corrupt == 0),
		fmtStall(warren.stalls.Quantile(0.95), len(warren.stalls)), goalMet(len(warren.stalls) > 0 && warren.stalls.Quantile(0.95) <= 3*time.Second),
		fmtStall(warren.stalls.Median(), len(warren.stalls)), goalMet(len(warren.stalls) > 0 && warren.stalls.Median() <= time.Second)))
	summary.Notes = appendListNote(summary.Notes, "**Sessions that broke before any kill** (not counted above): ", early)
	summary.Notes = appendListNote(summary.Notes, "Broken sessions, the first errors per kill (time after the kill): ", atMost(failures, 12))
	perRun.Notes = []string{"Killed: the process of the row's kill; crossing: sessions whose path crossed it at the kill, of the entry proxy's live sessions (the anchor: all). " +
		"Logged stall: the stalled field of the entry proxy's \"session resumed\" lines, its own view of each pause. " +
		"Agent's tunnel on the entry after: from the first kill of case 2 until the entry proxy's status lists a tunnel of the agent on itself."}
	rep := Report{Scenario: "survival", Tables: []Table{summary, perRun}}
	if len(rolls) > 0 {
		rollSum, rollRuns, stalls := rollingTables(cfg, rolls)
		rep.Tables = append(rep.Tables, rollSum, rollRuns)
		if len(stalls) > 0 {
			rep.Plots = append(rep.Plots, Plot{Name: "survival-rolling-stall", Render: func(w io.Writer) error {
				return plot.CDF(w, "Rolling restart: stall of interactive sessions entered elsewhere, per restart they crossed", "ms",
					[]plot.Series{{Name: "sessions entered through another proxy", Values: stalls.Millis()}})
			}})
		}
	}
	if len(labels) > 0 {
		rep.Plots = append(rep.Plots, Plot{Name: "survival-survived", Render: func(w io.Writer) error {
			return plot.Bars(w, "Sessions under way at the SIGKILL that survived it", "%", labels, []plot.Series{interOK, xferOK})
		}})
	}
	if len(cdf) > 0 {
		rep.Plots = append(rep.Plots, Plot{Name: "survival-stall", Render: func(w io.Writer) error {
			return plot.CDF(w, "Stall of interactive sessions that survived a SIGKILL: the longest wait for an echo from the kill on", "ms", cdf)
		}})
	}
	return rep
}

// goalMet is a goal's verdict: "met", or "**not met**".
func goalMet(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// atMost is items cut to the first n, then "and N more" for the rest.
func atMost(items []string, n int) []string {
	if len(items) > n {
		return append(items[:n], fmt.Sprintf("and %d more", len(items)-n))
	}
	return items
}

// appendListNote appends a note to notes: title, then items joined with
// "; " and a full stop; no note when items is empty.
func appendListNote(notes []string, title string, items []string) []string {
	if len(items) == 0 {
		return notes
	}
	return append(notes, title+strings.Join(items, "; ")+".")
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// survivalFlags registers the survival scenario's settings.
func survivalFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultSurvivalConfig()
	if tiny {
		c = TinySurvivalConfig()
	}
	fs.IntVar(&c.Reps, "reps", c.Reps, "repetitions of each case, each on a fresh cluster")
	fs.IntVar(&c.Interactive, "interactive", c.Interactive, "interactive sessions, each echoing a byte every --tick")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "interval between an interactive session's bytes")
	fs.IntVar(&c.Transfers, "transfers", c.Transfers, "large transfers, hash-checked end to end")
	mib := fs.Int64("transfer-mib", c.TransferBytes>>20, "MiB per transfer")
	rate := fs.Float64("transfer-rate", c.TransferRate/(1<<20), "MiB/s per transfer: paced, so that the transfers are under way at every kill")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "load before the first kill")
	fs.DurationVar(&c.Window, "window", c.Window, "interactive load after the last kill")
	fs.DurationVar(&c.Gap, "gap", c.Gap, "least time between the two kills of case 2 (which also waits for the agent's new tunnel and every session's answer), and pause between a restarted proxy's return and the next restart")
	fs.DurationVar(&c.Drain, "drain", c.Drain, "time a session has after the load to answer what is in flight (a transfer: after its paced end) before it counts as broken")
	fs.BoolVar(&c.Anchor, "anchor", c.Anchor, "also run the ssh -J b1,b2 anchor (needs the stock sshd)")
	fs.StringVar(&c.Gossip, "gossip", c.Gossip, "proxies' gossip profile: lan (production), local (tests) or wan")
	fs.IntVar(&c.RollingReps, "rolling-reps", c.RollingReps, "repetitions of the rolling restart (every proxy restarted in turn under load), each on a fresh cluster; 0 skips it")
	fs.IntVar(&c.NewClients, "new-clients", c.NewClients, "rolling restart: clients that each open a short session every --new-every, through a proxy not restarting")
	fs.DurationVar(&c.NewEvery, "new-every", c.NewEvery, "rolling restart: interval between one client's new sessions")
	return func(ctx context.Context, env Env) (Report, error) {
		c.TransferBytes, c.TransferRate = *mib<<20, *rate*(1<<20)
		return RunSurvival(ctx, env, c)
	}
}

// The rolling restart restarts every proxy of a fresh 3-proxy bed in turn,
// as the README's "Rolling restart" says: SIGTERM (the drain: not ready,
// the agent's tunnels handed to other proxies, the streams it forwards
// for sessions that entered elsewhere ended so that they resume over the
// agent's new tunnels, shutdown.grace for the sessions that entered
// through it), wait for the exit, start the same proxy again (same id,
// data directory and addresses), wait for /readyz, then for the agent to
// hold two tunnels, then the next proxy.
//
// Under load all along: long sessions (interactive and transfers)
// entered through every proxy; those of a restarted proxy end with it, by
// design, and as many are opened through it again once it is back. And
// NewClients clients that each open a short session every NewEvery, each
// through the next proxy in rotation: a proxy leaves the rotation before
// its SIGTERM (as a load balancer's health check or `warren connect`
// takes a proxy that is not ready out) and returns once it is ready.

// restartRecord is one proxy's restart in a rolling run.
type restartRecord struct {
	victim string
	at     time.Time // the SIGTERM
	held   bool      // it held one of the agent's tunnels at the SIGTERM
	// crossing counts the sessions entered through other proxies whose
	// path crossed it at the SIGTERM (by their entry proxies' logs).
	crossing int
	// exited, ready and tunnels: when it exited, when it was ready again,
	// when the agent held two tunnels again (zero: did not happen).
	exited, ready, tunnels time.Time
	killed                 bool // it had not exited grace+25s after the SIGTERM: SIGKILL
	newPorts               bool // an address of its was taken: it started on new ones
	holdersAfter           []string
	err                    error // it did not come back (ready)
	// resumes counts the "session resumed" lines of every proxy from the
	// SIGTERM until the next one (or the end).
	resumes int
}

// back says whether and how the proxy came back.
func (r restartRecord) back() string {
	if r.err != nil {
		return "no: " + r.err.Error()
	}
	s := "yes"
	if r.killed {
		s += " (SIGKILL: no exit after SIGTERM)"
	}
	if r.newPorts {
		s += " (on new ports)"
	}
	return s
}

// newSession is one short session of the rolling restart's clients.
type newSession struct {
	entry string
	at    time.Time
	took  time.Duration
	err   error
}

// rollingRun is what one rolling restart measured.
type rollingRun struct {
	rep            int
	dir            string
	grace          time.Duration
	loadStart, end time.Time
	restarts       []restartRecord
	sessions       []*echoSession
	transfers      []*transfer
	news           []newSession
	// early are long sessions that broke before the first restart;
	// reopenErrs the sessions that could not be opened through a proxy
	// that was back.
	early, reopenErrs []string
}

// rotation is the proxies new sessions enter through: every one but the
// one out (restarting), in turn.
type rotation struct {
	mu       sync.Mutex
	ids      []string
	addr     map[string]string // user addresses
	out      string
	inflight map[string]int
	next     int
}

func newRotation(ps []*ProxyProc) *rotation {
	r := &rotation{addr: map[string]string{}, inflight: map[string]int{}}
	for _, p := range ps {
		r.ids = append(r.ids, p.ID)
		r.addr[p.ID] = p.User
	}
	return r
}

// pick is the next proxy in rotation and its user address; done must
// follow once the session through it ended.
func (r *rotation) pick() (id, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range r.ids {
		id := r.ids[r.next%len(r.ids)]
		r.next++
		if id != r.out {
			r.inflight[id]++
			return id, r.addr[id]
		}
	}
	return "", ""
}

func (r *rotation) done(id string) {
	r.mu.Lock()
	r.inflight[id]--
	r.mu.Unlock()
}

// take puts id out of rotation; idle reports whether no new session
// through it is under way.
func (r *rotation) take(id string) {
	r.mu.Lock()
	r.out = id
	r.mu.Unlock()
}

func (r *rotation) idle(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflight[id] == 0
}

// back returns id, now at addr, to the rotation.
func (r *rotation) back(id, addr string) {
	r.mu.Lock()
	r.out, r.addr[id] = "", addr
	r.mu.Unlock()
}

// newEchoSession is one short session: a new SSH connection to the proxy
// at addr, a direct-tcpip channel to the echo resource, payload there and
// back, closed; 10 s at most.
func newEchoSession(c *Cluster, addr string, payload []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, c.clientConfig())
	if err != nil {
		return fmt.Errorf("ssh handshake: %w", err)
	}
	cl := ssh.NewClient(sc, chans, reqs)
	defer cl.Close()
	ch, err := cl.Dial("tcp", survivalTarget)
	if err != nil {
		return fmt.Errorf("open the session: %w", err)
	}
	defer ch.Close()
	if _, err := ch.Write(payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	back := make([]byte, len(payload))
	if _, err := io.ReadFull(ch, back); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	if !slices.Equal(back, payload) {
		return errors.New("the echo came back wrong")
	}
	return nil
}

// agentHolders are the proxies that hold a tunnel of the agent, each by
// its own status (the bed has one agent); the proxies not running are
// not asked.
func agentHolders(c *Cluster) []string {
	var out []string
	for _, p := range c.Proxies {
		if p.Proc == nil || p.Proc.Exited() {
			continue
		}
		st, err := c.Status(p)
		if err != nil {
			continue
		}
		for _, m := range st {
			if m.Link == "self" && m.LocalAgents >= 1 {
				out = append(out, p.ID)
			}
		}
	}
	return out
}

// restartProxy starts p again once it has exited: same id, data directory
// and addresses, joining through the other proxies, and waits until it is
// ready. An address taken in between by another process of the machine
// makes it start on new ones instead (newPorts).
func restartProxy(ctx context.Context, env Env, c *Cluster, p *ProxyProc) (newPorts bool, err error) {
	p.Seeds = nil
	for _, q := range c.Proxies {
		if q != p {
			p.Seeds = append(p.Seeds, q.Gossip)
		}
	}
	command := func(config string) harness.Command {
		return harness.Command{Bin: env.Binary, Args: []string{"proxy", "--config", config}}
	}
	start := func() error {
		err := c.h.StartProxy(ctx, p, command)
		if p.Proc != nil {
			c.stop.add(p.Proc.Stop)
		}
		return err
	}
	p.FixedPorts = true
	err = start()
	p.FixedPorts = false
	if err != nil && p.Proc != nil && p.Proc.Exited() && ctx.Err() == nil {
		newPorts = true
		err = start()
	}
	if err == nil {
		err = c.h.WaitReady(ctx, p)
	}
	return newPorts, err
}

// perProxy counts the i in [0, n) with i%3 == k: the long sessions of
// proxy k.
func perProxy(n, k int) int { return (n - k + 2) / 3 }

// runRollingOnce restarts every proxy of a fresh bed in turn, under load.
func runRollingOnce(ctx context.Context, env Env, cfg SurvivalConfig, rep int) (*rollingRun, error) {
	name := fmt.Sprintf("survival-rolling-%d", rep)
	b, err := setUpBed(ctx, env, func() (*survivalBed, error) { return startWarrenBed(ctx, env, cfg, name) })
	if err != nil {
		return nil, err
	}
	defer b.stop.run()
	// The agent stops first, so that the proxies stopped at the end have
	// no tunnel to hand off.
	defer b.agent.Stop()
	c := b.cluster
	run := &rollingRun{rep: rep, dir: b.dir, grace: cmp.Or(c.h.ShutdownGrace, 5*time.Second)}
	proxies := slices.Clone(c.Proxies)
	var ids []string
	for _, p := range proxies {
		ids = append(ids, p.ID)
	}
	env.progress("survival: rolling restart of %s, in that order; the agent's tunnels on %s (logs in %s)",
		strings.Join(ids, ", "), strings.Join(agentHolders(c), " and "), b.dir)

	load := newSessionLoad(cfg.Tick)
	nextXfer := 0
	// openLong opens long sessions through p, a few at a time.
	openLong := func(p *ProxyProc, interactive, transfers int) ([]*echoSession, []*transfer, error) {
		open := func(context.Context) (*survStream, error) { return b.openVia(p) }
		es, ts, err := openSessions(ctx, cfg, open, p.ID, interactive, transfers, nextXfer)
		nextXfer += transfers
		for _, t := range ts {
			// Open-ended: it sends until the load stops.
			t.stop, t.size = load.stopSend, math.MaxInt64
		}
		return es, ts, err
	}
	start := func(es []*echoSession, ts []*transfer) {
		load.start(es, ts)
		run.sessions, run.transfers = append(run.sessions, es...), append(run.transfers, ts...)
	}
	defer func() { shutAll(run.sessions, run.transfers) }()
	type opened struct {
		es []*echoSession
		ts []*transfer
	}
	var first []opened
	for k, p := range proxies {
		es, ts, err := openLong(p, perProxy(cfg.Interactive, k), perProxy(cfg.Transfers, k))
		first = append(first, opened{es, ts})
		if err != nil {
			for _, o := range first {
				start(o.es, o.ts) // to be shut
			}
			load.stop()
			return nil, fmt.Errorf("open the long sessions through %s: %w (logs in %s)", p.ID, err, b.dir)
		}
	}
	defer load.stop()
	run.loadStart = time.Now()
	for _, o := range first {
		start(o.es, o.ts)
	}

	// The new sessions, all along.
	rot := newRotation(proxies)
	stopNew := make(chan struct{})
	var (
		newWG   sync.WaitGroup
		newMu   sync.Mutex
		newDone bool
	)
	endNew := func() {
		if !newDone {
			close(stopNew)
			newDone = true
			newWG.Wait()
		}
	}
	defer endNew()
	for w := range cfg.NewClients {
		newWG.Add(1)
		go func() {
			defer newWG.Done()
			// Spread the clients over the interval.
			select {
			case <-stopNew:
				return
			case <-time.After(cfg.NewEvery * time.Duration(w) / time.Duration(cfg.NewClients)):
			}
			for n := 0; ; n++ {
				t0 := time.Now()
				id, addr := rot.pick()
				err := errors.New("no proxy in rotation")
				if id != "" {
					err = newEchoSession(c, addr, fmt.Appendf(nil, "client %d, session %d", w, n))
					rot.done(id)
				}
				newMu.Lock()
				run.news = append(run.news, newSession{entry: id, at: t0, took: time.Since(t0), err: err})
				newMu.Unlock()
				select {
				case <-stopNew:
					return
				case <-time.After(time.Until(t0.Add(cfg.NewEvery))):
				}
			}
		}()
	}
	if !sleepCtx(ctx, cfg.Warmup) {
		return nil, ctx.Err()
	}

	for k, p := range proxies {
		r := restartRecord{victim: p.ID}
		// Out of rotation first: no new session enters through it from
		// here on, and those under way end before the SIGTERM.
		rot.take(p.ID)
		_ = waitUntil(ctx, 15*time.Second, 5*time.Millisecond, "the new sessions through "+p.ID+" to end", func() bool { return rot.idle(p.ID) })
		r.held = slices.Contains(agentHolders(c), p.ID)
		for _, q := range proxies {
			if q != p {
				if el, err := readEntryLog(q.Logs[len(q.Logs)-1]); err == nil {
					r.crossing += el.crossing(p.ID)
				}
			}
		}
		r.at = time.Now()
		if err := p.Proc.Signal(syscall.SIGTERM); err != nil {
			return nil, fmt.Errorf("SIGTERM %s: %w", p.ID, err)
		}
		env.progress("survival: rolling: SIGTERM %s at %s UTC (the agent's tunnel on it: %v; sessions entered elsewhere crossing it: %d)",
			p.ID, r.at.UTC().Format("15:04:05.000"), r.held, r.crossing)
		if err := waitUntil(ctx, run.grace+25*time.Second, 10*time.Millisecond, p.ID+" to exit", p.Proc.Exited); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p.Proc.Kill()
			r.killed = true
		}
		r.exited = time.Now()
		r.newPorts, r.err = restartProxy(ctx, env, c, p)
		if r.err == nil {
			r.ready = time.Now()
			rot.back(p.ID, p.User)
			if waitUntil(ctx, 30*time.Second, 50*time.Millisecond, "the agent's two tunnels", func() bool {
				h := agentHolders(c)
				r.holdersAfter = h
				return len(h) == 2
			}) == nil {
				r.tunnels = time.Now()
			}
		}
		run.restarts = append(run.restarts, r)
		if r.err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			env.progress("survival: rolling: %s did not come back: %v; no further restart", p.ID, r.err)
			break
		}
		env.progress("survival: rolling: %s exited %s after the SIGTERM, ready %s after its start; the agent's tunnels on %s",
			p.ID, r.exited.Sub(r.at).Round(time.Millisecond), r.ready.Sub(r.exited).Round(time.Millisecond), strings.Join(r.holdersAfter, " and "))
		// As many long sessions through it as it had.
		es, ts, err := openLong(p, perProxy(cfg.Interactive, k), perProxy(cfg.Transfers, k))
		if err != nil {
			run.reopenErrs = append(run.reopenErrs, fmt.Sprintf("through %s, restarted: %v", p.ID, err))
		}
		start(es, ts)
		if k+1 < len(proxies) {
			// Every long session has answered since the SIGTERM (or
			// broke), then Gap.
			waitAnswered(ctx, run.sessions, r.at, "every session to answer after the restart")
			if !sleepCtx(ctx, cfg.Gap) {
				return nil, ctx.Err()
			}
		}
	}
	if !sleepCtx(ctx, cfg.Window) {
		return nil, ctx.Err()
	}
	load.stop()
	endNew()
	run.end = time.Now()
	// The transfers, open-ended, have Drain after the interactive
	// sessions' drain.
	if err := load.finish(ctx, run.sessions, run.transfers, cfg.Drain, time.Time{}); err != nil {
		return nil, err
	}

	// Resumes, by the time of each proxy's log line.
	var logs []string
	for _, p := range proxies {
		logs = append(logs, p.Logs...)
	}
	resumed, err := logTimes(logs, "session resumed")
	if err != nil {
		return nil, err
	}
	for i := range run.restarts {
		for _, at := range resumed {
			if !at.Before(run.restarts[i].at) && (i+1 == len(run.restarts) || at.Before(run.restarts[i+1].at)) {
				run.restarts[i].resumes++
			}
		}
	}
	run.early = brokenEarly(run.sessions, run.transfers, run.restartIndex, true)
	return run, nil
}

// logTimes are the times of the lines of the logs (slog's text format)
// whose message is msg.
func logTimes(paths []string, msg string) ([]time.Time, error) {
	var out []time.Time
	needle := fmt.Sprintf("msg=%q", msg)
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, needle) {
				if at, err := time.Parse(time.RFC3339Nano, logfmt(line)["time"]); err == nil {
					out = append(out, at)
				}
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// restartIndex is the restart an outcome at t belongs to: the last one at
// or before t (with attribSlack), or -1 before the first.
func (r *rollingRun) restartIndex(t time.Time) int {
	return eventIndex(t, len(r.restarts), func(i int) time.Time { return r.restarts[i].at })
}

// rollingRow is what one restart did to the sessions under way, or the
// sum of several.
type rollingRow struct {
	// The long sessions entered elsewhere.
	survivedTally
	ended, notEnded     int // long sessions entered through it: ended with it, or not
	newTotal, newFailed int
	newTook             Durations
	resumes             int
}

func (r *rollingRow) add(o rollingRow) {
	r.survivedTally.add(o.survivedTally)
	r.ended, r.notEnded = r.ended+o.ended, r.notEnded+o.notEnded
	r.newTotal, r.newFailed = r.newTotal+o.newTotal, r.newFailed+o.newFailed
	r.newTook = append(r.newTook, o.newTook...)
	r.resumes += o.resumes
}

// countEntered counts a long session under way that entered through the
// restarted proxy: it ended with it (broke at this restart), or not.
func (r *rollingRow) countEntered(ended bool) {
	if ended {
		r.ended++
	} else {
		r.notEnded++
	}
}

// row tallies restart i: the long sessions under way at its SIGTERM (open
// and not broken before), split by whether they entered through the
// restarted proxy; the survivors' stalls from the SIGTERM until the next
// one (or the end); the new sessions begun from the SIGTERM until the
// next one (or the end).
func (r *rollingRun) row(i int) rollingRow {
	k := r.restarts[i]
	var echoedBefore, sentBefore, next time.Time
	if i+1 < len(r.restarts) {
		echoedBefore, next = r.restarts[i+1].at, r.restarts[i+1].at
	} else {
		sentBefore = r.end
	}
	row := rollingRow{resumes: k.resumes}
	for _, e := range r.sessions {
		if e.sent[0].After(k.at) {
			continue // opened after it
		}
		at := e.brokeAt()
		idx := r.restartIndex(at)
		if !at.IsZero() && idx < i {
			continue // broke before it
		}
		if e.entry == k.victim {
			row.countEntered(!at.IsZero() && idx == i)
			continue
		}
		row.countSession(e, at.IsZero() || idx > i, k.at, echoedBefore, sentBefore, "interactive through "+e.entry+", ")
	}
	for _, t := range r.transfers {
		start, done, at, _, _, err := t.outcome()
		if start.After(k.at) {
			continue
		}
		idx := r.restartIndex(at)
		if (!at.IsZero() && idx < i) || (at.IsZero() && done.Before(k.at)) {
			continue
		}
		if t.entry == k.victim {
			row.countEntered(!at.IsZero() && idx == i)
			continue
		}
		row.countTransfer(at.IsZero() || idx > i, k.at, at, err, "transfer through "+t.entry+", ")
	}
	for _, n := range r.news {
		if n.at.Before(k.at) || (!next.IsZero() && !n.at.Before(next)) {
			continue
		}
		row.newTotal++
		row.newTook = append(row.newTook, n.took)
		if n.err != nil {
			row.newFailed++
		}
	}
	return row
}

// totals are the whole run's new sessions (the warm-up's and the
// window's included), and the long transfers' and sessions' byte checks.
type rollingTotals struct {
	newTotal, newFailed int
	newTook             Durations
	newErrs             []string
	xferDone, hashOK    int
	checked             int64
	corrupt             int // sessions or transfers whose bytes came back wrong
	back                int
	drain, ready, whole Durations // SIGTERM to exit, exit to ready, SIGTERM to ready
}

func (r *rollingRun) totals() rollingTotals {
	var t rollingTotals
	for _, n := range r.news {
		t.newTotal++
		t.newTook = append(t.newTook, n.took)
		if n.err != nil {
			t.newFailed++
			if len(t.newErrs) < 5 {
				when := "before the first restart"
				if i := r.restartIndex(n.at); i >= 0 {
					when = fmt.Sprintf("%s after the SIGTERM of %s", n.at.Sub(r.restarts[i].at).Round(time.Millisecond), r.restarts[i].victim)
				}
				t.newErrs = append(t.newErrs, fmt.Sprintf("through %s, %s: %v", orDash(n.entry), when, n.err))
			}
		}
	}
	for _, x := range r.transfers {
		x.mu.Lock()
		if x.complete {
			t.xferDone++
			if x.hashOK {
				t.hashOK++
				t.checked += x.received
			} else {
				t.corrupt++
			}
		}
		x.mu.Unlock()
	}
	for _, e := range r.sessions {
		e.mu.Lock()
		if e.corrupt {
			t.corrupt++
		}
		e.mu.Unlock()
	}
	for _, k := range r.restarts {
		if k.err != nil {
			continue
		}
		t.back++
		t.drain = append(t.drain, k.exited.Sub(k.at))
		t.ready = append(t.ready, k.ready.Sub(k.exited))
		t.whole = append(t.whole, k.ready.Sub(k.at))
	}
	return t
}

// fmtSpan is "p50 / max" of d, "-" without samples.
func fmtSpan(d Durations) string {
	if len(d) == 0 {
		return "-"
	}
	return fmtStall(d.Median(), 1) + " / " + fmtStall(slices.Max(d), 1)
}

// sinceOrDash is to - from, "-" when to is zero.
func sinceOrDash(from, to time.Time) string {
	if to.IsZero() {
		return "-"
	}
	return fmtStall(to.Sub(from), 1)
}

// rollingTables are the rolling restart's summary (a row per repetition,
// and their sum) and its per-restart table, and every survivor's stall.
func rollingTables(cfg SurvivalConfig, rolls []*rollingRun) (Table, Table, Durations) {
	summary := Table{
		Name:  "survival-rolling",
		Title: fmt.Sprintf("Rolling restart: every proxy of a 3-proxy cluster restarted in turn (SIGTERM: drain, then the same proxy again), under load (%d repetitions, a fresh cluster each)", len(rolls)),
		Header: []string{"run", "proxies restarted (back and ready)", "new sessions (total / failed)", "new session p50 / p99",
			"long sessions entered elsewhere: interactive survived", "transfers survived", "hashes matched", "bytes checked end to end",
			"ended with their entry (by design)", "stall p50", "stall p95", "stall max", "resumes logged",
			"SIGTERM to exit (p50 / max)", "exit to ready (p50 / max)", "SIGTERM to ready again (p50 / max)"},
	}
	perRestart := Table{
		Name:  "survival-rolling-restarts",
		Title: "Rolling restart: every restart",
		Header: []string{"rep", "restarted", "agent's tunnel on it", "crossing", "new sessions (total / failed)",
			"interactive survived", "transfers survived", "ended with their entry", "stall p50", "stall p95", "stall max", "resumes logged",
			"SIGTERM to exit", "exit to ready", "SIGTERM to the agent's 2 tunnels", "agent's tunnels after", "back"},
	}
	var (
		all                            rollingRow
		allT                           rollingTotals
		restarted, attempted, notEnded int
		failures, early                []string
	)
	summaryRow := func(name string, sum rollingRow, t rollingTotals, back, of int) []string {
		return []string{name, frac(back, of), fmt.Sprintf("%d / %d", t.newTotal, t.newFailed),
			fmtStall(t.newTook.Median(), len(t.newTook)) + " / " + fmtStall(t.newTook.Quantile(0.99), len(t.newTook)),
			frac(sum.interOK, sum.interUnder), frac(sum.xferOK, sum.xferUnder), frac(t.hashOK, t.xferDone), sizeName(t.checked),
			fmt.Sprint(sum.ended), fmtStall(sum.stalls.Median(), len(sum.stalls)), fmtStall(sum.stalls.Quantile(0.95), len(sum.stalls)),
			fmtStall(slices.Max(append(sum.stalls, 0)), len(sum.stalls)), fmt.Sprint(sum.resumes),
			fmtSpan(t.drain), fmtSpan(t.ready), fmtSpan(t.whole)}
	}
	for _, r := range rolls {
		var sum rollingRow
		for i, k := range r.restarts {
			row := r.row(i)
			sum.add(row)
			notEnded += row.notEnded
			held := "no"
			if k.held {
				held = "yes"
			}
			perRestart.Rows = append(perRestart.Rows, []string{fmt.Sprint(r.rep), k.victim, held, fmt.Sprint(k.crossing),
				fmt.Sprintf("%d / %d", row.newTotal, row.newFailed), frac(row.interOK, row.interUnder), frac(row.xferOK, row.xferUnder),
				fmt.Sprint(row.ended), fmtStall(row.stalls.Median(), len(row.stalls)), fmtStall(row.stalls.Quantile(0.95), len(row.stalls)),
				fmtStall(slices.Max(append(row.stalls, 0)), len(row.stalls)), fmt.Sprint(row.resumes),
				sinceOrDash(k.at, k.exited), sinceOrDash(k.exited, k.ready), sinceOrDash(k.at, k.tunnels), orDash(strings.Join(k.holdersAfter, ", ")), k.back()})
			for _, e := range row.errs {
				failures = append(failures, fmt.Sprintf("rep %d, restart of %s: %s", r.rep, k.victim, e))
			}
		}
		t := r.totals()
		for _, e := range t.newErrs {
			failures = append(failures, fmt.Sprintf("rep %d, new session %s", r.rep, e))
		}
		for _, e := range r.reopenErrs {
			failures = append(failures, fmt.Sprintf("rep %d, reopening the long sessions %s", r.rep, e))
		}
		for _, e := range r.early {
			early = append(early, fmt.Sprintf("rep %d, %s", r.rep, e))
		}
		summary.Rows = append(summary.Rows, summaryRow(fmt.Sprintf("rep %d", r.rep), sum, t, t.back, 3))
		all.add(sum)
		allT.newTotal, allT.newFailed = allT.newTotal+t.newTotal, allT.newFailed+t.newFailed
		allT.newTook = append(allT.newTook, t.newTook...)
		allT.xferDone, allT.hashOK, allT.checked, allT.corrupt = allT.xferDone+t.xferDone, allT.hashOK+t.hashOK, allT.checked+t.checked, allT.corrupt+t.corrupt
		allT.drain, allT.ready, allT.whole = append(allT.drain, t.drain...), append(allT.ready, t.ready...), append(allT.whole, t.whole...)
		restarted, attempted = restarted+t.back, attempted+3
	}
	if len(rolls) > 1 {
		summary.Rows = append(summary.Rows, summaryRow("all", all, allT, restarted, attempted))
	}
	grace := rolls[0].grace
	broken := (all.interUnder - all.interOK) + (all.xferUnder - all.xferOK)
	summary.Notes = []string{
		fmt.Sprintf("Setup: the bed of cases 1 and 2 (3 proxies, gossip `%s`, shutdown.grace %s; one agent with `connection_count: 2` serving `svc`, a tcp resource on an echo server). "+
			"Each proxy in turn, proxy-1 to proxy-3: out of the new sessions' rotation (and the new sessions under way through it have ended), SIGTERM, "+
			"wait for its exit (SIGKILL after grace + 25 s), start it again with the same id, data directory, addresses and config, joining through the other two, wait for `/readyz`, "+
			"back in rotation, wait until the agent holds 2 tunnels (each proxy's own status), open as many long sessions through it as it had, wait until every long session has answered and %s more, then the next proxy. "+
			"The drain: not ready, the agent's tunnel handed to another proxy (new tunnel first), the streams it forwards for sessions entered elsewhere ended (they resume), "+
			"shutdown.grace for the sessions that entered through it (a tcp session has no terminal to be told on: they run until the grace ends), gossip leave, exit.", cfg.Gossip, grace, cfg.Gap),
		fmt.Sprintf("Load: long sessions entered through every proxy, %d interactive (one byte every %s, each echo timed) and %d transfers (pseudo-random bytes paced at %s, sent until the load stops, "+
			"read back and hashed both ways), spread over the proxies in turn; %s of load before the first SIGTERM, %s after the last proxy is back. "+
			"New sessions: %d clients, each opening one every %s: a new SSH connection (Go's x/crypto/ssh) to the next proxy in rotation, a direct-tcpip channel to `svc`, a few bytes there and back, closed; "+
			"failed: any error, or no answer within 10 s.",
			cfg.Interactive, cfg.Tick, cfg.Transfers, rateMiB(cfg.TransferRate), cfg.Warmup, cfg.Window, cfg.NewClients, cfg.NewEvery),
		"Long sessions entered elsewhere: per restart, the long sessions under way at its SIGTERM that entered through another proxy; survived: did not break from that SIGTERM until the next (or the end); " +
			"summed over the restarts (a session crosses up to two). Ended with their entry: the long sessions under way that entered through the restarted proxy and ended with it, by design " +
			"(a new connection goes on through another proxy). Hashes matched: of the transfers that came back whole (every one not ended with its entry), counted once each. " +
			"Stall, per interactive session entered elsewhere that survived a restart: the longest any byte waited for its echo among those in flight at the SIGTERM or sent after it, until the next SIGTERM (or the end). " +
			"Crossing: sessions entered through the other proxies whose path crossed the restarted one at the SIGTERM, by their entry proxies' logs. " +
			"Resumes logged: \"session resumed\" lines of every proxy from the SIGTERM until the next (or the end). New sessions per restart: those begun from its SIGTERM until the next (or the end); the summary counts the whole run.",
		fmt.Sprintf("Goal (issue), rolling restart of every proxy; measured and reported, never asserted: zero failed new sessions (%d of %d failed: %s); "+
			"zero broken sessions that did not enter through the restarting proxy (%d broken: %s); every byte of those sessions exact (%d sessions or transfers with bytes wrong: %s).",
			allT.newFailed, allT.newTotal, goalMet(allT.newFailed == 0), broken, goalMet(broken == 0), allT.corrupt, goalMet(allT.corrupt == 0)),
	}
	if notEnded > 0 {
		summary.Notes = append(summary.Notes, fmt.Sprintf("**%d long sessions that entered through a restarted proxy did not end with it.**", notEnded))
	}
	summary.Notes = appendListNote(summary.Notes, "**Long sessions that broke before the first restart** (not counted above): ", early)
	summary.Notes = appendListNote(summary.Notes, "Failures, the first per restart and run (time after the SIGTERM): ", atMost(failures, 12))
	perRestart.Notes = []string{"Agent's tunnel on it: whether the restarted proxy held one of the agent's two tunnels at the SIGTERM (then the hand-off moves it). " +
		"SIGTERM to the agent's 2 tunnels: until two proxies report a tunnel of the agent again, after the restarted proxy is ready. Back: whether it came back ready (on its own addresses unless said)."}
	return summary, perRestart, all.stalls
}
