package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/bench/plot"
)

// SetupRateConfig sizes the setup-rate scenario.
type SetupRateConfig struct {
	Conns    int           // SSH connections to the entry point
	Workers  int           // sessions in flight
	Count    int           // sessions per row at most
	Duration time.Duration // per row at most
}

func DefaultSetupRateConfig() SetupRateConfig {
	return SetupRateConfig{Conns: 16, Workers: 64, Count: 100000, Duration: 20 * time.Second}
}

func TinySetupRateConfig() SetupRateConfig {
	return SetupRateConfig{Conns: 2, Workers: 4, Count: 200, Duration: 10 * time.Second}
}

// rateRow is one entry point's result.
type rateRow struct {
	name     string
	sessions []Session
	elapsed  time.Duration
	cpu      time.Duration // of the servers on the path
	loadCPU  time.Duration // of the load generator (this process)
}

// RunSetupRate drives new sessions (a channel to an echo resource, one
// byte there and back) as fast as the Go SSH load generator can, through
// a proxy holding the agent's tunnel, through a peer proxy, and, as the
// anchor, through a stock sshd bastion to the same echo server.
func RunSetupRate(ctx context.Context, env Env, cfg SetupRateConfig) (Report, error) {
	dir, err := env.scratch("setup-rate")
	if err != nil {
		return Report{}, err
	}
	var stop cleanups
	defer stop.run()
	env.progress("starting a 2-proxy Warren cluster, an agent and a stock sshd in %s", dir)
	c, err := StartCluster(ctx, env, dir, ClusterConfig{Proxies: 2})
	if err != nil {
		return Report{}, err
	}
	stop.add(c.Close)
	echo, err := echoServer("127.0.2.10", &stop)
	if err != nil {
		return Report{}, err
	}
	agent, err := c.StartAgent("agent-a", AgentConfig{Proxies: []int{0}, Extra: fmt.Sprintf(`connection_count: 1
resources:
  - {name: echo, kind: tcp, addr: "%s"}
`, echo)})
	if err != nil {
		return Report{}, err
	}
	if err := c.WaitHealthy(ctx, "echo", 1, 30*time.Second); err != nil {
		return Report{}, err
	}
	o, err := newOpenSSH(dir, c.userCA)
	if err != nil {
		return Report{}, err
	}
	bastion, err := o.start("sshd-bastion", "127.0.2.2", &stop)
	if err != nil {
		return Report{}, err
	}
	p1, p2 := c.Proxies[0], c.Proxies[1]
	rows := []struct {
		name   string
		dial   func() (*ssh.Client, error)
		target string
		procs  []*Proc
	}{
		{"Warren, tunnel on entry proxy", func() (*ssh.Client, error) { return c.Dial(p1) }, "echo:7", []*Proc{p1.Proc, agent}},
		{"Warren, through a peer proxy", func() (*ssh.Client, error) { return c.Dial(p2) }, "echo:7", []*Proc{p1.Proc, p2.Proc, agent}},
		{"stock sshd bastion (anchor)", func() (*ssh.Client, error) { return dialSshd(c, o, bastion.Addr) }, echo, []*Proc{bastion.Proc}},
	}
	var out []rateRow
	for _, r := range rows {
		env.progress("%s: %d sessions or %s, %d in flight on %d connections", r.name, cfg.Count, cfg.Duration, cfg.Workers, cfg.Conns)
		var clients []*ssh.Client
		for range cfg.Conns {
			cl, err := r.dial()
			if err != nil {
				return Report{}, fmt.Errorf("%s: %w", r.name, err)
			}
			clients = append(clients, cl)
		}
		cpu0, err := procsCPU(r.procs)
		if err != nil {
			return Report{}, err
		}
		self0, start := selfCPU(), time.Now()
		ss, err := Load{Clients: clients, Target: r.target, Workers: cfg.Workers, Count: cfg.Count, Duration: cfg.Duration}.Run(ctx)
		elapsed, self1 := time.Since(start), selfCPU()
		for _, cl := range clients {
			cl.Close()
		}
		// sshd serves each connection in a child; its CPU counts once the
		// child has ended and been reaped.
		if err := waitUntil(ctx, 10*time.Second, 10*time.Millisecond, r.name+" connection processes to end", func() bool {
			return noChildren(r.procs)
		}); err != nil {
			return Report{}, err
		}
		cpu1, cerr := procsCPU(r.procs)
		if err != nil {
			return Report{}, err
		}
		if cerr != nil {
			return Report{}, cerr
		}
		out = append(out, rateRow{name: r.name, sessions: ss, elapsed: elapsed, cpu: cpu1 - cpu0, loadCPU: self1 - self0})
	}
	return setupRateReport(cfg, out), nil
}

// dialSshd opens a Go SSH connection to a stock sshd with the bench
// user's certificate, checking the servers' host key.
func dialSshd(c *Cluster, o *openssh, addr string) (*ssh.Client, error) {
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(o.hostPub))
	if err != nil {
		return nil, err
	}
	cfg := c.clientConfig()
	cfg.User = c.Login
	cfg.HostKeyCallback = ssh.FixedHostKey(hostKey)
	return ssh.Dial("tcp", addr, cfg)
}

// noChildren reports whether none of ps has a child process left.
func noChildren(ps []*Proc) bool {
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.PID(), p.PID()))
		if err != nil || len(bytes.TrimSpace(b)) > 0 {
			return false
		}
	}
	return true
}

func procsCPU(ps []*Proc) (time.Duration, error) {
	var sum time.Duration
	for _, p := range ps {
		d, err := p.CPU()
		if err != nil {
			return 0, fmt.Errorf("cpu of %s: %w", p.Name, err)
		}
		sum += d
	}
	return sum, nil
}

func setupRateReport(cfg SetupRateConfig, rows []rateRow) Report {
	t := Table{
		Name:   "setup-rate",
		Title:  "New sessions per second (Go SSH load generator)",
		Header: []string{"entry", "sessions", "failed", "sessions/s", "p50", "p99", "server CPU per session", "load generator CPU per session"},
	}
	labels := make([]string, len(rows))
	rates := plot.Series{Name: "sessions/s"}
	var cdfs []plot.Series
	for i, r := range rows {
		ok, failed, broken := summarize(r.sessions, time.Time{}, time.Time{})
		n := len(r.sessions)
		rate := float64(len(ok)) / r.elapsed.Seconds()
		t.Rows = append(t.Rows, []string{
			r.name, fmt.Sprint(n), fmt.Sprint(failed + broken), fmt.Sprintf("%.0f", rate),
			ms(ok.Median()), ms(ok.Quantile(0.99)),
			us(r.cpu / time.Duration(max(n, 1))), us(r.loadCPU / time.Duration(max(n, 1))),
		})
		labels[i] = r.name
		rates.Values = append(rates.Values, rate)
		cdfs = append(cdfs, plot.Series{Name: r.name, Values: ok.Millis()})
	}
	t.Notes = []string{
		fmt.Sprintf("%d SSH connections to the entry point, opened before timing; %d sessions in flight at all times; each row stops at %d sessions or after %s. A session is a new direct-tcpip channel to the echo resource, one byte there and back, and the close.", cfg.Conns, cfg.Workers, cfg.Count, cfg.Duration),
		"Server CPU is user+system time of the processes on the path (entry proxy, peer proxy, agent; for the anchor, the sshd serving the connections), from /proc, divided by sessions. The load generator runs in the bench process on the same 2 cores.",
	}
	return Report{
		Scenario: "setup-rate",
		Tables:   []Table{t},
		Plots: []Plot{
			{Name: "setup-rate", Render: func(w io.Writer) error {
				return plot.Bars(w, "New sessions per second", "sessions/s", labels, []plot.Series{rates})
			}},
			{Name: "setup-rate-latency", Render: func(w io.Writer) error {
				return plot.CDF(w, "Session latency at full rate", "ms", cdfs)
			}},
		},
	}
}

func setupRateFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultSetupRateConfig()
	if tiny {
		c = TinySetupRateConfig()
	}
	fs.IntVar(&c.Conns, "conns", c.Conns, "SSH connections to the entry point")
	fs.IntVar(&c.Workers, "workers", c.Workers, "sessions in flight")
	fs.IntVar(&c.Count, "count", c.Count, "sessions per row at most")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "time per row at most")
	return func(ctx context.Context, env Env) (Report, error) {
		if c.Conns < 1 || c.Workers < 1 || c.Count < 1 || c.Duration <= 0 {
			return Report{}, fmt.Errorf("setup-rate: --conns, --workers, --count and --duration must be positive")
		}
		return RunSetupRate(ctx, env, c)
	}
}
