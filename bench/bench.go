// Package bench measures Warren on one machine, side by side with the
// anchors it has to beat: stock OpenSSH bastions for the data path, the
// same session idle for latency under load, and the goals of the design
// for scale and failover.
//
// Each scenario is a Config and a Run function. Run starts everything it
// needs on loopback (proxies and agents as separate `warren` processes,
// stock sshd servers, load generators), measures, stops what it started
// and returns a Report: markdown tables for the terminal and RESULTS.md,
// CSV files and PNG plots for --out. Nothing here is global; a scenario
// depends only on its Env and its Config.
package bench

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
)

// Env is what every scenario gets from its caller.
type Env struct {
	// Binary is the warren executable started for proxies and agents.
	Binary string
	// Dir is a scratch directory; each scenario makes its own below it.
	Dir string
	// Progress receives a line now and then during long runs (nil: none).
	Progress io.Writer
}

// progress prints a timestamped progress line.
func (e Env) progress(format string, args ...any) {
	if e.Progress == nil {
		return
	}
	fmt.Fprintf(e.Progress, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// scratch makes a fresh directory for one scenario run.
func (e Env) scratch(name string) (string, error) {
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(e.Dir, name+"-")
}

// Report is what a scenario measured.
type Report struct {
	Scenario string
	Tables   []Table
	Plots    []Plot
}

// Table is one markdown table, with notes printed under it.
type Table struct {
	Name   string // file name stem for the CSV, e.g. "path-setup"
	Title  string
	Header []string
	Rows   [][]string
	Notes  []string
}

// Plot renders one PNG from data already in the report.
type Plot struct {
	Name   string // file name stem
	Render func(w io.Writer) error
}

// Markdown writes every table of the report.
func (r Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## %s\n\n", r.Scenario)
	fmt.Fprintf(w, "%s\n\n", MachineLine())
	for _, t := range r.Tables {
		if t.Title != "" {
			fmt.Fprintf(w, "### %s\n\n", t.Title)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(t.Header, " | "))
		seps := make([]string, len(t.Header))
		for i := range seps {
			seps[i] = "---"
			if i > 0 {
				seps[i] = "---:"
			}
		}
		fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
		for _, row := range t.Rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
		for _, n := range t.Notes {
			fmt.Fprintf(w, "%s\n", n)
		}
		if len(t.Notes) > 0 {
			fmt.Fprintln(w)
		}
	}
}

// WriteFiles writes each table as DIR/NAME.csv and each plot as
// DIR/NAME.png, and returns the paths written.
func (r Report) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, t := range r.Tables {
		p := filepath.Join(dir, t.Name+".csv")
		if err := writeCSV(p, t); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	for _, pl := range r.Plots {
		p := filepath.Join(dir, pl.Name+".png")
		f, err := os.Create(p)
		if err != nil {
			return paths, err
		}
		err = pl.Render(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return paths, fmt.Errorf("plot %s: %w", pl.Name, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// MachineLine describes where the figures were measured.
func MachineLine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("Machine: %d cores (%s)%s%s, %s, loopback only, measured %s.",
		runtime.NumCPU(), cpu, mem, kernel, runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

// cleanups runs functions in reverse order of registration, once.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(fn func()) {
	c.mu.Lock()
	c.fns = append(c.fns, fn)
	c.mu.Unlock()
}

func (c *cleanups) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// waitUntil polls cond every interval until it holds, ctx ends or the
// timeout passes; what names the condition in the error.
func waitUntil(ctx context.Context, timeout, interval time.Duration, what string, cond func() bool) error {
	return harness.Until(ctx, timeout, interval, what, func() (bool, error) { return cond(), nil })
}

// writeCSV writes a table's header and rows.
func writeCSV(path string, t Table) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write(t.Header)
	_ = w.WriteAll(t.Rows) // flushes
	return errors.Join(w.Error(), f.Close())
}
