package bench

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
)

// InteractiveConfig sizes the interactive-under-load scenario.
type InteractiveConfig struct {
	RoundTrips int // one-byte round trips per measurement
	// Uploads is the number of concurrent uploads of the many-uploads
	// rows (0: no such rows).
	Uploads int
}

func DefaultInteractiveConfig() InteractiveConfig {
	return InteractiveConfig{RoundTrips: 3000, Uploads: 8}
}

func TinyInteractiveConfig() InteractiveConfig { return InteractiveConfig{RoundTrips: 100, Uploads: 2} }

// interactiveResult is one route idle and under load.
type interactiveResult struct {
	route        route
	bulkArgs     []string // the upload's route
	bulkNote     string
	idle, loaded Durations
	uploads      int     // concurrent uploads; 0 means 1
	shares       []int64 // bytes each upload sent
	bulkBytes    int64   // all uploads together
	bulkTime     time.Duration
}

// RunInteractive measures a keystroke's round trip on a session while a
// second session on the same route uploads without pause, against the
// same session idle. On Warren's routes the two sessions share the
// client's connection to the entry proxy, the peer link and the agent's
// tunnel; on the anchor they share nothing but the machine.
func RunInteractive(ctx context.Context, env Env, cfg InteractiveConfig) (Report, error) {
	bed, err := startPathBed(ctx, env, "interactive", false)
	if err != nil {
		return Report{}, err
	}
	defer bed.close()
	var res []*interactiveResult
	for _, r := range bed.routes {
		// Warren's routes, and the stock anchor they should beat.
		if len(r.Args) == 3 && r.Args[1] != "b1" {
			res = append(res, &interactiveResult{route: r, bulkArgs: r.Args, bulkNote: "same route"})
		}
		// The same sessions with the upload on another agent's tunnel
		// (agent-b, also on proxy-1): what sharing the tunnel costs.
		if len(r.Args) == 3 && r.Args[2] == "sshd" {
			other := []string{r.Args[0], r.Args[1], "sshd-b"}
			res = append(res, &interactiveResult{route: r, bulkArgs: other, bulkNote: "another agent's tunnel"})
		}
	}
	// Many uploads at once on the anchor and on Warren's tcp-resource
	// routes: the keystroke among them, and how fairly they share.
	if cfg.Uploads > 1 {
		for _, r := range bed.routes {
			if len(r.Args) == 3 && (r.Args[1] == "b1,b2" || r.Args[2] == "sshd") {
				res = append(res, &interactiveResult{route: r, bulkArgs: r.Args, uploads: cfg.Uploads,
					bulkNote: fmt.Sprintf("same route, %d uploads", cfg.Uploads)})
			}
		}
	}
	block := randomBlock()
	for _, r := range res {
		env.progress("round trips on %s → %s: %d idle, then %d under %s", r.route.Name, r.route.Target, cfg.RoundTrips, cfg.RoundTrips, r.bulkNote)
		if err := measureUnderLoad(ctx, bed.client, r, cfg.RoundTrips, min(100, cfg.RoundTrips), 300*time.Millisecond, block); err != nil {
			return Report{}, err
		}
	}
	return interactiveReport(cfg, res), nil
}

// measureUnderLoad takes n round trips on a session of r's route after
// warm to warm up, then starts r.uploads uploads (at least one) on
// r.bulkArgs and, settle later (for them to reach their speed), n more.
func measureUnderLoad(ctx context.Context, c sshClient, r *interactiveResult, n, warm int, settle time.Duration, block []byte) error {
	s, err := c.startInteractive(ctx, r.route.Args)
	if err != nil {
		return err
	}
	defer s.close()
	if _, err := s.roundTrips(warm); err != nil {
		return err
	}
	if r.idle, err = s.roundTrips(n); err != nil {
		return err
	}
	uploads := max(r.uploads, 1)
	bulks := make([]*bulk, 0, uploads)
	defer func() {
		for _, b := range bulks {
			b.in.Close()
			b.cmd.Wait()
		}
	}()
	for range uploads {
		b, err := c.startBulk(ctx, r.bulkArgs)
		if err != nil {
			return err
		}
		bulks = append(bulks, b)
	}
	stop := make(chan struct{})
	type sent struct {
		n   int64
		err error
	}
	done := make(chan sent, uploads)
	start := time.Now()
	for _, b := range bulks {
		go func() {
			n, err := b.send(0, block, stop)
			done <- sent{n, err}
		}()
	}
	// Let the uploads reach full speed before sampling (the deferred
	// cleanup ends them on the way out).
	if !sleepCtx(ctx, settle) {
		close(stop)
		return ctx.Err()
	}
	r.loaded, err = s.roundTrips(n)
	close(stop)
	var uerr error
	r.shares = r.shares[:0]
	for range bulks {
		up := <-done
		r.shares = append(r.shares, up.n)
		r.bulkBytes += up.n
		uerr = cmp.Or(uerr, up.err)
	}
	r.bulkTime = time.Since(start)
	var ferr error
	for _, b := range bulks {
		ferr = cmp.Or(ferr, b.finish())
	}
	bulks = nil
	return cmp.Or(err, uerr, ferr)
}

// jainIndex is Jain's fairness index of the shares: 1 when all are equal,
// 1/n when one takes everything.
func jainIndex(shares []int64) float64 {
	var sum, squares float64
	for _, x := range shares {
		sum += float64(x)
		squares += float64(x) * float64(x)
	}
	if squares == 0 {
		return 0
	}
	return sum * sum / (float64(len(shares)) * squares)
}

func interactiveReport(cfg InteractiveConfig, res []*interactiveResult) Report {
	t := Table{
		Name:  "interactive-under-load",
		Title: fmt.Sprintf("Keystroke round trip under a concurrent upload (cipher %s)", Cipher),
		Header: []string{"route", "target", "upload on", "idle p50", "idle p99", "loaded p50", "loaded p99",
			"p99 loaded/idle", "upload meanwhile", "Jain's index"},
	}
	labels := make([]string, len(res))
	idle, loaded := plot.Series{Name: "idle p99"}, plot.Series{Name: "under upload p99"}
	var cdfs []plot.Series
	for i, r := range res {
		ratio := float64(r.loaded.Quantile(0.99)) / float64(max(r.idle.Quantile(0.99), 1))
		t.Rows = append(t.Rows, []string{
			r.route.Name, r.route.Target, r.bulkNote,
			us(r.idle.Median()), us(r.idle.Quantile(0.99)),
			us(r.loaded.Median()), us(r.loaded.Quantile(0.99)),
			fmt.Sprintf("%.1f×", ratio), mibps(r.bulkBytes, r.bulkTime), fairness(r.shares),
		})
		labels[i] = r.route.Name + " → " + r.route.Target + ", upload on " + r.bulkNote
		idle.Values = append(idle.Values, float64(r.idle.Quantile(0.99))/1e3)
		loaded.Values = append(loaded.Values, float64(r.loaded.Quantile(0.99))/1e3)
		cdfs = append(cdfs,
			plot.Series{Name: labels[i] + ", idle", Values: r.idle.Micros()},
			plot.Series{Name: labels[i] + ", loaded", Values: r.loaded.Micros()})
	}
	t.Notes = []string{
		"\"same route, N uploads\": N uploads at once on the keystroke's route; \"upload meanwhile\" is their sum and Jain's index how evenly they shared it ((Σx)²/(N·Σx²): 1 is a fair share each, 1/N one upload taking everything; goal ≥ 0.95).",
		fmt.Sprintf("One `ssh HOST cat` session measures %d one-byte round trips idle, then %d more while a second `ssh HOST 'cat >/dev/null'` on the same route uploads random bytes without pause (from 300 ms before the first loaded sample to the last). Goal: p99 under load within 3× of idle.", cfg.RoundTrips, cfg.RoundTrips),
		"\"same route\": the two sessions share the proxies, the peer link (peer rows) and the agent's one tunnel. \"another agent's tunnel\": the upload goes to the same sshd through agent-b's tunnel, also on proxy-1, so the sessions share the proxies and the peer link but not the tunnel. On 2 cores every row also shares the CPUs with the upload's ssh, sshd and cat processes.",
	}
	return Report{
		Scenario: "interactive-under-load",
		Tables:   []Table{t},
		Plots: []Plot{
			{Name: "interactive-p99", Render: func(w io.Writer) error {
				return plot.Bars(w, "Keystroke round trip p99, idle and under an upload", "µs", labels, []plot.Series{idle, loaded})
			}},
			{Name: "interactive-cdf", Render: func(w io.Writer) error {
				return plot.CDF(w, "Keystroke round trip, idle and under an upload", "µs", cdfs)
			}},
		},
	}
}

// fairness is Jain's index of several shares, or a dash for one.
func fairness(shares []int64) string {
	if len(shares) < 2 {
		return "—"
	}
	return fmt.Sprintf("%.3f", jainIndex(shares))
}

func interactiveFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultInteractiveConfig()
	if tiny {
		c = TinyInteractiveConfig()
	}
	fs.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "one-byte round trips idle and again under load")
	fs.IntVar(&c.Uploads, "uploads", c.Uploads, "concurrent uploads of the many-uploads rows (0 or 1: no such rows)")
	return func(ctx context.Context, env Env) (Report, error) {
		if c.RoundTrips < 1 {
			return Report{}, fmt.Errorf("interactive-under-load: --round-trips must be at least 1")
		}
		if c.Uploads < 0 || c.Uploads > 64 {
			return Report{}, fmt.Errorf("interactive-under-load: --uploads must be 0 to 64, got %d", c.Uploads)
		}
		return RunInteractive(ctx, env, c)
	}
}
