package connect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

// DefaultTimeout bounds a probe round: a proxy whose user port has not
// answered by then is taken as unreachable.
const DefaultTimeout = time.Second

// Config configures Connect.
type Config struct {
	// Candidates are the proxies to choose from.
	Candidates []Candidate
	// Region is preferred when set: its proxies first, others only when
	// none of its proxies is usable.
	Region string
	// StatePath is the state file ("" keeps no state: every run picks the
	// fastest ready proxy afresh).
	StatePath string
	// Timeout bounds the probes (default DefaultTimeout).
	Timeout time.Duration
	// Now is the clock for the state's samples (default time.Now).
	Now func() time.Time
}

// CheckAndSetDefaults reports every problem with c at once and returns a
// copy with defaults set.
func (c Config) CheckAndSetDefaults() (Config, error) {
	var errs []error
	if len(c.Candidates) == 0 {
		errs = append(errs, errors.New("no proxy to choose from"))
	}
	seen := map[string]bool{}
	for _, cand := range c.Candidates {
		if err := cand.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("candidate %s: %w", model.Quote(cand.ID), err))
		}
		if seen[cand.ID] {
			errs = append(errs, fmt.Errorf("candidate %s is listed twice", model.Quote(cand.ID)))
		}
		seen[cand.ID] = true
	}
	if c.Region != "" {
		errs = append(errs, CheckRegion(c.Region))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s is negative", c.Timeout))
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, errors.Join(errs...)
}

// Outcome is what Connect did: the decision, every probe's result, and
// whether the state was kept (StateErr says why not).
type Outcome struct {
	Decision Decision
	Results  map[string]Result
	StateErr error
}

// Connect probes every candidate, chooses by the rule in the package doc,
// updates the state file, and returns an open TCP connection to the
// chosen proxy's user port (the one the probe made).
func Connect(ctx context.Context, cfg Config) (net.Conn, Outcome, error) {
	cfg, err := cfg.CheckAndSetDefaults()
	if err != nil {
		return nil, Outcome{}, err
	}
	var out Outcome
	st := &State{}
	if cfg.StatePath != "" {
		st, out.StateErr = LoadState(cfg.StatePath)
	}
	results, conns := probe(ctx, cfg, st)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	out.Results = results
	now := cfg.Now()
	d, err := Choose(st, cfg.Candidates, results, cfg.Region, now)
	if err != nil {
		return nil, out, err
	}
	out.Decision = d
	st.Record(slicesOf(results), now)
	if cfg.StatePath != "" {
		if err := SaveState(cfg.StatePath, st); err != nil {
			out.StateErr = err
		}
	}
	conn := conns[d.Order[0].ID]
	delete(conns, d.Order[0].ID)
	return conn, out, nil
}

func slicesOf(m map[string]Result) []Result {
	out := make([]Result, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	return out
}

// event is one half of a candidate's probe.
type event struct {
	id    string
	tcp   bool // the user port's answer (else /readyz's)
	rtt   time.Duration
	conn  net.Conn
	err   error
	ready string // /readyz: why not ready, or ""
}

// errSkipped marks a candidate whose probe was cut short because the home
// had answered and it could no longer beat it.
var errSkipped = errors.New("not waited for: the current proxy answered first")

// probe measures every candidate at once and returns the results with the
// open user-port connections. It waits for every probe up to the timeout,
// but returns early once the home (the previous choice) has answered
// ready and no candidate still out can be clearly better than it: one
// that has not answered yet is slower than the home by now.
func probe(ctx context.Context, cfg Config, st *State) (map[string]Result, map[string]net.Conn) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	events := make(chan event, 2*len(cfg.Candidates))
	var wg sync.WaitGroup
	for _, c := range cfg.Candidates {
		wg.Add(2)
		go func() {
			defer wg.Done()
			start := time.Now()
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", c.UserAddr)
			events <- event{id: c.ID, tcp: true, rtt: time.Since(start), conn: conn, err: err}
		}()
		go func() {
			defer wg.Done()
			events <- event{id: c.ID, ready: readyz(ctx, c)}
		}()
	}
	results := map[string]Result{}
	conns := map[string]net.Conn{}
	tcpDone, readyDone := map[string]bool{}, map[string]bool{}
	now := cfg.Now()
	settled := func() bool {
		home := st.Homes[cfg.Region]
		hr, ok := results[home]
		if !ok || !tcpDone[home] || !readyDone[home] || !hr.Usable() {
			return false
		}
		hc := candidate(cfg.Candidates, home)
		if hc == nil || (cfg.Region != "" && hc.Region != cfg.Region) {
			return false
		}
		homeBest, _ := st.Best(home, hr.RTT, now)
		for _, c := range cfg.Candidates {
			switch {
			case c.ID == home || (tcpDone[c.ID] && readyDone[c.ID]):
			case tcpDone[c.ID]:
				if r := results[c.ID]; r.Err == nil {
					if b, _ := st.Best(c.ID, r.RTT, now); ClearlyBetter(b, homeBest) {
						return false
					}
				}
			default:
				if b, ok := st.Best(c.ID, 0, now); ok && ClearlyBetter(b, homeBest) {
					return false
				}
			}
		}
		return true
	}
	for n := 0; n < 2*len(cfg.Candidates) && !settled(); n++ {
		e := <-events
		r := results[e.id]
		r.ID = e.id
		if e.tcp {
			tcpDone[e.id] = true
			r.RTT, r.Err = e.rtt, e.err
			if e.err != nil {
				r.Err = dialError(e.err, cfg.Timeout)
			} else {
				conns[e.id] = e.conn
			}
		} else {
			readyDone[e.id] = true
			r.NotReady = e.ready
		}
		results[e.id] = r
	}
	cancel()
	// Collect what is still out, so no goroutine outlives the call.
	go func() { wg.Wait(); close(events) }()
	for e := range events {
		if e.conn != nil {
			e.conn.Close()
		}
	}
	// Only an early return leaves probes out: those candidates are not
	// used this time (nor their round trips kept).
	for _, c := range cfg.Candidates {
		if !tcpDone[c.ID] || !readyDone[c.ID] {
			results[c.ID] = Result{ID: c.ID, Err: errSkipped}
			if conn := conns[c.ID]; conn != nil {
				conn.Close()
				delete(conns, c.ID)
			}
		}
	}
	return results, conns
}

func candidate(cands []Candidate, id string) *Candidate {
	for i := range cands {
		if cands[i].ID == id {
			return &cands[i]
		}
	}
	return nil
}

// dialError shortens a dial error to what a user needs.
func dialError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || isTimeout(err):
		return fmt.Errorf("no answer within %s", timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readyz asks c's /readyz and returns why it is not ready, or "" when it
// is ready or cannot be asked. It cannot be asked when c has no HTTP
// address, when that address is a loopback one while the user port is not
// (the proxy's HTTP port is private), or when the HTTP port does not take
// the connection (a firewall may keep users off it). A proxy that takes
// the connection but does not answer in time is not ready (it hangs), nor
// one whose HTTP port on the user port's host refuses connections (it is
// stopping or gone).
func readyz(ctx context.Context, c Candidate) string {
	if c.HTTPAddr == "" {
		return ""
	}
	uhost, _, _ := net.SplitHostPort(c.UserAddr)
	hhost, _, _ := net.SplitHostPort(c.HTTPAddr)
	if isLoopback(hhost) && !isLoopback(uhost) {
		return ""
	}
	var connected bool
	var mu sync.Mutex
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				connected = true
				mu.Unlock()
			}
			return conn, err
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddr+"/readyz", nil)
	if err != nil {
		return ""
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		mu.Lock()
		wasConnected := connected
		mu.Unlock()
		switch {
		case wasConnected:
			return "/readyz did not answer in time"
		case errors.Is(err, syscall.ECONNREFUSED) && hhost == uhost:
			return "its HTTP port refuses connections (stopping or gone)"
		}
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode == http.StatusOK {
		return ""
	}
	text, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	text = strings.TrimPrefix(text, "not ready: ")
	if text == "" {
		text = "no reason given"
	}
	return fmt.Sprintf("/readyz answered %d: %s", resp.StatusCode, strings.Trim(model.QuoteN(text, 200), `"`))
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
