package bench

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
	"github.com/warren-proxy/warren/internal/harness"
)

// ClientsConfig sizes the clients scenario: real client programs
// (pgbench, redis-benchmark) through `ssh -L`, through Warren and through
// a stock sshd bastion, and directly.
type ClientsConfig struct {
	PgClients     int           // pgbench -c
	PgThreads     int           // pgbench -j
	PgDuration    time.Duration // pgbench -T, per row and round
	PgScale       int           // pgbench -i -s
	RedisRequests int           // redis-benchmark -n, per test (GET, SET)
	RedisClients  int           // redis-benchmark -c
	Rounds        int           // every row this many times, interleaved
}

// DefaultClientsConfig is the full run; TinyClientsConfig only checks it
// works (CI).
func DefaultClientsConfig() ClientsConfig {
	return ClientsConfig{PgClients: 8, PgThreads: 2, PgDuration: 20 * time.Second, PgScale: 1,
		RedisRequests: 100000, RedisClients: 50, Rounds: 3}
}

func TinyClientsConfig() ClientsConfig {
	return ClientsConfig{PgClients: 2, PgThreads: 1, PgDuration: 2 * time.Second, PgScale: 1,
		RedisRequests: 2000, RedisClients: 4, Rounds: 1}
}

// clientTools are the programs the scenario runs.
type clientTools struct {
	pgBin          string // directory of postgres, initdb, pgbench, pg_isready
	redisServer    string
	redisBenchmark string
}

// findClientTools finds PostgreSQL's server and pgbench, and Redis's
// server and redis-benchmark.
func findClientTools() (clientTools, error) {
	var t clientTools
	var missing []string
	dir, err := postgresBinDir()
	if err != nil {
		missing = append(missing, "postgresql")
	}
	t.pgBin = dir
	if t.redisServer, err = exec.LookPath("redis-server"); err != nil {
		missing = append(missing, "redis-server")
	}
	if t.redisBenchmark, err = exec.LookPath("redis-benchmark"); err != nil {
		missing = append(missing, "redis-tools")
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("the clients scenario needs PostgreSQL (server, pgbench) and Redis (server, redis-benchmark): install them with `apt-get install -y %s` (`make bench-clients` does, without starting their services)", strings.Join(missing, " "))
	}
	return t, nil
}

// postgresBinDir is the directory of PostgreSQL's server programs:
// Debian's /usr/lib/postgresql/VERSION/bin (the newest version), else
// wherever postgres is on PATH.
func postgresBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"postgres", "initdb", "pgbench", "pg_isready"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return false
			}
		}
		return true
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server programs not found")
}

// clientPath is one way from the client programs to the servers.
type clientPath struct {
	Name string
	// Host is the ssh_config host that forwards (empty: direct), and
	// target names the server behind it as the forward asks for it.
	Host   string
	target func(server string) string
	// servers are the processes that forward on the server side, whose
	// CPU counts with the ssh client's.
	servers []forwarder
}

// forwarder is a process on the server side of a forward.
type forwarder struct {
	Label string // a column of the CPU table: cpuLabels
	Proc  *Proc
}

// cpuLabels name the processes that forward, in the CPU table's order.
var cpuLabels = []string{"ssh client", "sshd", "Warren proxy", "Warren agent"}

// cpuShare is the CPU time of each process that forwarded, by label.
type cpuShare map[string]time.Duration

func (c cpuShare) total() time.Duration {
	var t time.Duration
	for _, d := range c {
		t += d
	}
	return t
}

// clientsBed is what the scenario runs on.
type clientsBed struct {
	dir        string
	tools      clientTools
	pg, redis  string // host:port of the servers
	sshConfig  string
	paths      []clientPath
	stop       cleanups
	forwardLog int
}

func startClientsBed(ctx context.Context, env Env, cfg ClientsConfig) (_ *clientsBed, err error) {
	tools, err := findClientTools()
	if err != nil {
		return nil, err
	}
	if _, err := SshdPath(); err != nil {
		return nil, err
	}
	dir, err := env.scratch("clients")
	if err != nil {
		return nil, err
	}
	b := &clientsBed{dir: dir, tools: tools}
	defer func() {
		if err != nil {
			b.stop.run()
		}
	}()
	env.progress("starting PostgreSQL, Redis, a Warren proxy with an agent and a stock sshd bastion in %s", dir)
	if b.pg, err = startPostgres(ctx, tools.pgBin, dir, &b.stop); err != nil {
		return nil, err
	}
	if b.redis, err = startRedis(ctx, tools.redisServer, dir, &b.stop); err != nil {
		return nil, err
	}
	env.progress("pgbench -i -s %d", cfg.PgScale)
	initCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := pgbenchCmd(initCtx, tools.pgBin, b.pg, "-i", "-q", "-s", strconv.Itoa(cfg.PgScale)).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgbench -i: %w: %s", err, tail(out))
	}
	c, err := StartCluster(ctx, env, dir, ClusterConfig{Proxies: 1})
	if err != nil {
		return nil, err
	}
	b.stop.add(c.Close)
	agent, err := c.StartAgent("agent-1", AgentConfig{Proxies: []int{0}, Extra: fmt.Sprintf(`connection_count: 1
resources:
  - {name: pg, kind: tcp, addr: "%s"}
  - {name: redis, kind: tcp, addr: "%s"}
`, b.pg, b.redis)})
	if err != nil {
		return nil, err
	}
	for _, r := range []string{"pg", "redis"} {
		if err := c.WaitHealthy(ctx, r, 1, 30*time.Second); err != nil {
			return nil, err
		}
	}
	o, err := newOpenSSH(dir, c.userCA)
	if err != nil {
		return nil, err
	}
	bastion, err := o.start("sshd-bastion", "127.0.2.2", &b.stop)
	if err != nil {
		return nil, err
	}
	p := c.Proxies[0]
	b.sshConfig = filepath.Join(dir, "ssh_config")
	if err := writeClientConfig(b.sshConfig, c.Login, c.User, o, []clientHost{
		{Name: "bastion", Addr: bastion.Addr},
		{Name: "warren-proxy", Addr: p.User, User: "bench"},
	}); err != nil {
		return nil, err
	}
	names := map[string]string{b.pg: "pg", b.redis: "redis"}
	b.paths = []clientPath{
		{Name: "direct (no hop)"},
		{Name: "ssh -L via stock sshd bastion", Host: "bastion", target: func(s string) string { return s }, servers: []forwarder{{"sshd", bastion.Proc}}},
		{Name: "ssh -L via Warren (proxy, agent tunnel)", Host: "warren-proxy", target: func(s string) string { return names[s] + ":" + portOf(s) }, servers: []forwarder{{"Warren proxy", p.Proc}, {"Warren agent", agent}}},
	}
	return b, nil
}

// startOnFreePort starts a server on a port of ip that is free just
// before: one that exits before it listens (another process took the
// port in between) is started again on a new port, twice at most.
func startOnFreePort(ip string, start func(addr string) (*Proc, error), ready func(p *Proc, addr string) error) (*Proc, string, error) {
	var err error
	for range 3 {
		var addr string
		if addr, err = harness.FreePort(ip); err != nil {
			return nil, "", err
		}
		var p *Proc
		if p, err = start(addr); err != nil {
			return nil, "", err
		}
		if err = ready(p, addr); err == nil {
			return p, addr, nil
		}
		p.Stop()
		if !p.Exited() {
			break
		}
	}
	return nil, "", err
}

// startPostgres makes a database cluster with trust authentication and
// runs its server on 127.0.0.1, TCP only. PostgreSQL refuses to run as
// root: as root, it runs as the postgres user, with its data in a
// directory of its own under the system's temporary directory (the
// scratch directory may not be reachable by that user).
func startPostgres(ctx context.Context, bin, dir string, stop *cleanups) (string, error) {
	var cred *syscall.Credential
	data := filepath.Join(dir, "pgdata")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user to run it as: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if data, err = os.MkdirTemp("", "warren-bench-pgdata-"); err != nil {
			return "", err
		}
		stop.add(func() { os.RemoveAll(data) })
		if err := os.Chown(data, int(uid), int(gid)); err != nil {
			return "", err
		}
	}
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	initdb := exec.CommandContext(initCtx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	initdb.Dir = "/"
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w: %s", err, tail(out))
	}
	var n int
	_, addr, err := startOnFreePort("127.0.0.1", func(addr string) (*Proc, error) {
		n++
		p, err := startProcAs("postgres", filepath.Join(dir, fmt.Sprintf("postgres-%d.log", n)), cred, filepath.Join(bin, "postgres"),
			"-D", data, "-h", hostOf(addr), "-p", portOf(addr), "-k", "",
			// A throwaway database: no durability, room for clients.
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=300", "-c", "logging_collector=off")
		if err != nil {
			return nil, err
		}
		stop.add(func() { p.StopWith(syscall.SIGINT) }) // fast shutdown
		return p, nil
	}, func(p *Proc, addr string) error {
		return waitUp(p, waitUntil(ctx, 60*time.Second, 50*time.Millisecond, "PostgreSQL to accept connections on "+addr, func() bool {
			return p.Exited() || pgReady(ctx, bin, addr)
		}))
	})
	if err != nil {
		return "", err
	}
	return addr, nil
}

// waitUp is the outcome of waiting for p to serve: err, or p's early
// exit.
func waitUp(p *Proc, err error) error {
	if p.Exited() {
		return p.Failure()
	}
	return err
}

// pgReady runs pg_isready against addr.
func pgReady(ctx context.Context, bin, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, filepath.Join(bin, "pg_isready"), "-q", "-h", hostOf(addr), "-p", portOf(addr), "-U", "postgres", "-d", "postgres", "-t", "3").Run() == nil
}

// startRedis runs a Redis server on 127.0.0.1 that keeps nothing on disk.
func startRedis(ctx context.Context, bin, dir string, stop *cleanups) (string, error) {
	var n int
	_, addr, err := startOnFreePort("127.0.0.1", func(addr string) (*Proc, error) {
		n++
		p, err := startProc("redis", filepath.Join(dir, fmt.Sprintf("redis-%d.log", n)), bin,
			"--port", portOf(addr), "--bind", hostOf(addr), "--save", "", "--appendonly", "no", "--dir", dir)
		if err != nil {
			return nil, err
		}
		stop.add(p.Stop)
		return p, nil
	}, func(p *Proc, addr string) error {
		return waitUp(p, waitUntil(ctx, 30*time.Second, 20*time.Millisecond, "Redis to answer PING on "+addr, func() bool {
			return p.Exited() || redisPing(addr) == nil
		}))
	})
	return addr, err
}

// redisPing sends PING to addr and wants PONG.
func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("redis at %s answered %q to PING", addr, line)
	}
	return nil
}

// forward starts `ssh -N -L` on path to server and waits until a client
// gets through it; it returns the local address.
func (b *clientsBed) forward(ctx context.Context, path clientPath, server string) (*Proc, string, error) {
	b.forwardLog++
	log := filepath.Join(b.dir, fmt.Sprintf("ssh-forward-%d.log", b.forwardLog))
	p, local, err := startOnFreePort("127.0.0.1", func(local string) (*Proc, error) {
		p, err := sshClient{config: b.sshConfig}.startForward(log, local+":"+path.target(server), path.Host)
		if err != nil {
			return nil, err
		}
		b.stop.add(p.Stop)
		return p, nil
	}, func(p *Proc, local string) error {
		if err := harness.WaitListening(p, local, 30*time.Second); err != nil {
			return err
		}
		// Listening is the client's half; a server answering through it
		// is the whole path.
		return waitUp(p, waitUntil(ctx, 30*time.Second, 50*time.Millisecond, "a server to answer through "+path.Name, func() bool {
			if p.Exited() {
				return true
			}
			if server == b.pg {
				return pgReady(ctx, b.tools.pgBin, local)
			}
			return redisPing(local) == nil
		}))
	})
	if err != nil {
		return nil, "", fmt.Errorf("ssh -L through %s: %w", path.Host, err)
	}
	return p, local, nil
}

// measure runs one client program on path: directly against server, or
// through a fresh forward that is closed after; it returns the CPU that
// forwarding took (the ssh client's and the server side's).
func (b *clientsBed) measure(ctx context.Context, path clientPath, server string, run func(addr string) error) (cpuShare, error) {
	if path.Host == "" {
		return nil, run(server)
	}
	fwd, local, err := b.forward(ctx, path, server)
	if err != nil {
		return nil, err
	}
	// The ssh client's handshake is setup: count from here.
	ssh0, err := fwd.CPU()
	procs := make([]*Proc, len(path.servers))
	before := make([]time.Duration, len(path.servers))
	for i, f := range path.servers {
		procs[i] = f.Proc
		if err == nil {
			before[i], err = f.Proc.CPU()
		}
	}
	if err != nil {
		fwd.Stop()
		return nil, fmt.Errorf("cpu of the forward's processes: %w", err)
	}
	err = run(local)
	fwd.Stop()
	cpu := cpuShare{"ssh client": fwd.ExitCPU() - ssh0}
	if err != nil {
		return nil, err
	}
	// sshd serves each connection in a child; its CPU counts once the
	// child has ended and been reaped.
	if err := waitUntil(ctx, 10*time.Second, 10*time.Millisecond, path.Name+" connection processes to end", func() bool {
		return noChildren(procs)
	}); err != nil {
		return nil, err
	}
	for i, f := range path.servers {
		after, err := f.Proc.CPU()
		if err != nil {
			return nil, fmt.Errorf("cpu of %s: %w", f.Proc.Name, err)
		}
		cpu[f.Label] += after - before[i]
	}
	return cpu, nil
}

// pgbenchCmd is pgbench against the database at addr.
func pgbenchCmd(ctx context.Context, bin, addr string, args ...string) *exec.Cmd {
	full := append([]string{"-h", hostOf(addr), "-p", portOf(addr), "-U", "postgres"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pgbench"), append(full, "postgres")...)
	// Plain TCP, as the server has no TLS: no negotiation per connection.
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// pgRun is one pgbench run.
type pgRun struct {
	TPS          float64
	LatencyAvg   time.Duration
	Transactions int64
	Failed       int64
	Latencies    Durations // every transaction's, from pgbench's log
	CPU          cpuShare  // of forwarding (nil: direct)
}

// redisRun is one redis-benchmark run of its tests.
type redisRun struct {
	Tests map[string]redisTest // by test name: SET, GET
	CPU   cpuShare             // of forwarding (nil: direct)
}

type redisTest struct {
	RPS      float64
	P50, P99 time.Duration // zero: not printed by this redis-benchmark
}

// runPgbench runs the select-only workload against addr.
func (b *clientsBed) runPgbench(ctx context.Context, cfg ClientsConfig, addr, logName string) (pgRun, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.PgDuration+2*time.Minute)
	defer cancel()
	prefix := filepath.Join(b.dir, logName)
	cmd := pgbenchCmd(ctx, b.tools.pgBin, addr, "-S", "-n", "-c", strconv.Itoa(cfg.PgClients), "-j", strconv.Itoa(cfg.PgThreads),
		"-T", strconv.Itoa(int(cfg.PgDuration.Seconds())), "-l", "--log-prefix", prefix)
	cmd.Dir = b.dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return pgRun{}, fmt.Errorf("pgbench: %w: %s%s", err, tail(out), tail([]byte(stderr.String())))
	}
	r, err := parsePgbench(string(out))
	if err != nil {
		return r, err
	}
	logs, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return r, err
	}
	for _, l := range logs {
		d, err := readPgbenchLog(l)
		if err != nil {
			return r, err
		}
		r.Latencies = append(r.Latencies, d...)
		os.Remove(l)
	}
	if len(r.Latencies) == 0 {
		return r, fmt.Errorf("pgbench wrote no transaction log at %s.*", prefix)
	}
	return r, nil
}

var (
	pgTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	pgTx      = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	pgFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// parsePgbench reads pgbench's summary.
func parsePgbench(out string) (pgRun, error) {
	var r pgRun
	m := pgTPS.FindStringSubmatch(out)
	l := pgLatency.FindStringSubmatch(out)
	n := pgTx.FindStringSubmatch(out)
	if m == nil || l == nil || n == nil {
		return r, fmt.Errorf("pgbench printed no tps, latency average or transaction count: %s", tail([]byte(out)))
	}
	r.TPS, _ = strconv.ParseFloat(m[1], 64)
	lat, _ := strconv.ParseFloat(l[1], 64)
	r.LatencyAvg = time.Duration(lat * float64(time.Millisecond))
	r.Transactions, _ = strconv.ParseInt(n[1], 10, 64)
	if f := pgFailed.FindStringSubmatch(out); f != nil {
		r.Failed, _ = strconv.ParseInt(f[1], 10, 64)
	}
	if r.Failed > 0 {
		return r, fmt.Errorf("pgbench: %d failed transactions", r.Failed)
	}
	return r, nil
}

// readPgbenchLog reads the latency (third field, µs) of every
// transaction in a pgbench -l log.
func readPgbenchLog(path string) (Durations, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out Durations
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		v, err := strconv.ParseInt(fs[2], 10, 64)
		if err != nil {
			continue // "failed" or "skipped" in place of a time
		}
		out = append(out, time.Duration(v)*time.Microsecond)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// runRedisBenchmark runs GET and SET against addr.
func (b *clientsBed) runRedisBenchmark(ctx context.Context, cfg ClientsConfig, addr string) (redisRun, error) {
	// At least 500 requests/s, or something is wrong.
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(2*cfg.RedisRequests/500)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.tools.redisBenchmark, "-h", hostOf(addr), "-p", portOf(addr),
		"-n", strconv.Itoa(cfg.RedisRequests), "-c", strconv.Itoa(cfg.RedisClients), "-t", "set,get", "--csv")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return redisRun{}, fmt.Errorf("redis-benchmark: %w: %s%s", err, tail(out), tail([]byte(stderr.String())))
	}
	tests, err := parseRedisCSV(string(out))
	if err != nil {
		return redisRun{}, err
	}
	for _, t := range []string{"SET", "GET"} {
		if _, ok := tests[t]; !ok {
			return redisRun{}, fmt.Errorf("redis-benchmark printed no %s row: %s", t, tail(out))
		}
	}
	return redisRun{Tests: tests}, nil
}

// parseRedisCSV reads redis-benchmark --csv: a header row (redis-tools 7
// prints rps and latency percentiles in ms; older ones only rps), then a
// row per test.
func parseRedisCSV(out string) (map[string]redisTest, error) {
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark --csv: %w", err)
	}
	col := map[string]int{"test": 0, "rps": 1}
	if len(rows) > 0 && rows[0][0] == "test" {
		for i, h := range rows[0] {
			col[h] = i
		}
		rows = rows[1:]
	}
	msAt := func(row []string, name string) time.Duration {
		i, ok := col[name]
		if !ok || i >= len(row) {
			return 0
		}
		v, err := strconv.ParseFloat(row[i], 64)
		if err != nil {
			return 0
		}
		return time.Duration(v * float64(time.Millisecond))
	}
	tests := map[string]redisTest{}
	for _, row := range rows {
		if len(row) <= col["rps"] {
			continue
		}
		rps, err := strconv.ParseFloat(row[col["rps"]], 64)
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark --csv: rps %q: %w", row[col["rps"]], err)
		}
		tests[row[col["test"]]] = redisTest{RPS: rps, P50: msAt(row, "p50_latency_ms"), P99: msAt(row, "p99_latency_ms")}
	}
	return tests, nil
}

// clientsResult is one path's runs.
type clientsResult struct {
	Path  string
	Pg    []pgRun
	Redis []redisRun
}

// RunClients runs pgbench (select-only) and redis-benchmark (GET, SET)
// directly, through `ssh -L` via a stock sshd bastion and through
// `ssh -L` via Warren, round after round, on the same machine.
func RunClients(ctx context.Context, env Env, cfg ClientsConfig) (Report, error) {
	b, err := startClientsBed(ctx, env, cfg)
	if err != nil {
		return Report{}, err
	}
	defer b.stop.run()
	res := make([]*clientsResult, len(b.paths))
	for i, p := range b.paths {
		res[i] = &clientsResult{Path: p.Name}
	}
	for round := 1; round <= cfg.Rounds; round++ {
		for i, p := range b.paths {
			env.progress("round %d/%d: pgbench -S -c %d -j %d -T %s, %s", round, cfg.Rounds, cfg.PgClients, cfg.PgThreads, cfg.PgDuration, p.Name)
			var r pgRun
			cpu, err := b.measure(ctx, p, b.pg, func(addr string) error {
				var err error
				r, err = b.runPgbench(ctx, cfg, addr, fmt.Sprintf("pgbench-%d-%d", round, i))
				return err
			})
			if err != nil {
				return Report{}, fmt.Errorf("%s: %w", p.Name, err)
			}
			r.CPU = cpu
			res[i].Pg = append(res[i].Pg, r)
		}
		for i, p := range b.paths {
			env.progress("round %d/%d: redis-benchmark -t set,get -n %d -c %d, %s", round, cfg.Rounds, cfg.RedisRequests, cfg.RedisClients, p.Name)
			var r redisRun
			cpu, err := b.measure(ctx, p, b.redis, func(addr string) error {
				var err error
				r, err = b.runRedisBenchmark(ctx, cfg, addr)
				return err
			})
			if err != nil {
				return Report{}, fmt.Errorf("%s: %w", p.Name, err)
			}
			r.CPU = cpu
			res[i].Redis = append(res[i].Redis, r)
		}
	}
	return clientsReport(cfg, res), nil
}

// clientsSummary is one path's figures over the rounds.
type clientsSummary struct {
	tps, setRPS, getRPS float64 // medians of the rounds
	latAvg              time.Duration
	lat                 Durations // every transaction of every round
	setP50, setP99      time.Duration
	getP50, getP99      time.Duration
	// Forwarding CPU per pgbench transaction and per redis request, by
	// process (nil: direct).
	cpuPerTx, cpuPerRequest cpuShare
}

func summarizeClients(cfg ClientsConfig, r *clientsResult) clientsSummary {
	var s clientsSummary
	var tps, set, get []float64
	var lats, setP50, setP99, getP50, getP99 Durations
	pgCPU, redisCPU := cpuShare{}, cpuShare{}
	var txs int64
	for _, p := range r.Pg {
		tps = append(tps, p.TPS)
		lats = append(lats, p.LatencyAvg)
		s.lat = append(s.lat, p.Latencies...)
		for k, v := range p.CPU {
			pgCPU[k] += v
		}
		txs += p.Transactions
	}
	for _, x := range r.Redis {
		st, gt := x.Tests["SET"], x.Tests["GET"]
		set, get = append(set, st.RPS), append(get, gt.RPS)
		setP50, setP99 = append(setP50, st.P50), append(setP99, st.P99)
		getP50, getP99 = append(getP50, gt.P50), append(getP99, gt.P99)
		for k, v := range x.CPU {
			redisCPU[k] += v
		}
	}
	s.tps, s.setRPS, s.getRPS = medianFloat(tps), medianFloat(set), medianFloat(get)
	s.latAvg = lats.Median()
	s.setP50, s.setP99, s.getP50, s.getP99 = setP50.Median(), setP99.Median(), getP50.Median(), getP99.Median()
	per := func(c cpuShare, n int64) cpuShare {
		if len(c) == 0 || n == 0 {
			return nil
		}
		out := cpuShare{}
		for k, v := range c {
			out[k] = v / time.Duration(n)
		}
		return out
	}
	s.cpuPerTx = per(pgCPU, txs)
	// Each run sends -n requests per test, SET and GET.
	s.cpuPerRequest = per(redisCPU, int64(len(r.Redis))*2*int64(cfg.RedisRequests))
	return s
}

func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func clientsReport(cfg ClientsConfig, res []*clientsResult) Report {
	sums := make([]clientsSummary, len(res))
	for i, r := range res {
		sums[i] = summarizeClients(cfg, r)
	}
	ms3 := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
	}
	usec := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
	// cpu is the total forwarding CPU, "-" for none (direct).
	cpu := func(c cpuShare) string {
		if c == nil {
			return "-"
		}
		return usec(c.total())
	}
	t := Table{
		Name:  "clients",
		Title: "Client programs through a local forward: pgbench (select-only) and redis-benchmark",
		Header: []string{"path", "pgbench TPS", "pgbench latency avg", "pgbench p50", "pgbench p99",
			"redis SET req/s", "SET p50", "SET p99", "redis GET req/s", "GET p50", "GET p99",
			"forwarding CPU per pgbench tx", "forwarding CPU per redis request"},
	}
	for i, r := range res {
		s := sums[i]
		t.Rows = append(t.Rows, []string{
			r.Path, fmt.Sprintf("%.0f", s.tps), ms3(s.latAvg), ms3(s.lat.Median()), ms3(s.lat.Quantile(0.99)),
			fmt.Sprintf("%.0f", s.setRPS), ms3(s.setP50), ms3(s.setP99),
			fmt.Sprintf("%.0f", s.getRPS), ms3(s.getP50), ms3(s.getP99),
			cpu(s.cpuPerTx), cpu(s.cpuPerRequest),
		})
	}
	rounds := "one run"
	if cfg.Rounds > 1 {
		rounds = fmt.Sprintf("the median of %d rounds (the rows of a round run one after another, round after round); pgbench's p50 and p99 are over every transaction of every round", cfg.Rounds)
	}
	t.Notes = []string{
		fmt.Sprintf("pgbench: `pgbench -S -n -c %d -j %d -T %d -l` (select-only: one primary-key SELECT per transaction, on a database made with `pgbench -i -s %d`); TPS and latency average as pgbench prints them, p50 and p99 from its per-transaction log. redis-benchmark: `redis-benchmark -t set,get -n %d -c %d --csv` (percentiles as it prints them). Each figure is %s.",
			cfg.PgClients, cfg.PgThreads, int(cfg.PgDuration.Seconds()), cfg.PgScale, cfg.RedisRequests, cfg.RedisClients, rounds),
		"Paths: direct to the server's port; `ssh -N -L PORT:127.0.0.1:DBPORT bastion` to a stock sshd on 127.0.2.2; `ssh -N -L PORT:pg:DBPORT warren-proxy` to a Warren proxy (127.0.1.1) whose agent holds one tunnel and serves PostgreSQL and Redis as `tcp` resources. A fresh `ssh -L` per run; the client programs open their connections once, so these figures are the data path, not setup. The stock OpenSSH client everywhere, cipher " + Cipher + " on every SSH hop.",
		"Forwarding CPU: user+system time of the ssh client and of the server side of the forward (Warren: proxy and agent; the bastion: the sshd serving the connection), from /proc, over the run, divided by pgbench's transactions or redis-benchmark's requests. PostgreSQL, Redis, the client programs, the proxy, the agent and sshd all share the machine's cores.",
	}
	ratio := Table{
		Name:   "clients-ratio",
		Title:  "Warren against the stock sshd bastion",
		Header: []string{"figure", "direct (no hop)", "stock sshd bastion", "Warren", "Warren / sshd"},
	}
	if len(sums) == 3 {
		d, a, w := sums[0], sums[1], sums[2]
		rate := func(name string, get func(clientsSummary) float64) {
			x, y := get(w), get(a)
			ratio.Rows = append(ratio.Rows, []string{name, fmt.Sprintf("%.0f", get(d)), fmt.Sprintf("%.0f", y), fmt.Sprintf("%.0f", x), ratioOf(x, y)})
		}
		dur := func(name string, get func(clientsSummary) time.Duration, format func(time.Duration) string) {
			x, y := get(w), get(a)
			ratio.Rows = append(ratio.Rows, []string{name, format(get(d)), format(y), format(x), ratioOf(float64(x), float64(y))})
		}
		rate("pgbench TPS (higher is better)", func(s clientsSummary) float64 { return s.tps })
		dur("pgbench latency p50 (lower is better)", func(s clientsSummary) time.Duration { return s.lat.Median() }, ms3)
		dur("pgbench latency p99", func(s clientsSummary) time.Duration { return s.lat.Quantile(0.99) }, ms3)
		rate("redis SET req/s (higher is better)", func(s clientsSummary) float64 { return s.setRPS })
		rate("redis GET req/s (higher is better)", func(s clientsSummary) float64 { return s.getRPS })
		dur("redis SET p50 (lower is better)", func(s clientsSummary) time.Duration { return s.setP50 }, ms3)
		dur("redis GET p50 (lower is better)", func(s clientsSummary) time.Duration { return s.getP50 }, ms3)
		ratio.Rows = append(ratio.Rows,
			[]string{"forwarding CPU per pgbench tx", "-", cpu(a.cpuPerTx), cpu(w.cpuPerTx), ratioOf(float64(w.cpuPerTx.total()), float64(a.cpuPerTx.total()))},
			[]string{"forwarding CPU per redis request", "-", cpu(a.cpuPerRequest), cpu(w.cpuPerRequest), ratioOf(float64(w.cpuPerRequest.total()), float64(a.cpuPerRequest.total()))},
		)
	}
	ratio.Notes = []string{"Reported, not asserted. A ratio above 1 is better for Warren on rates, worse on latencies and CPU."}
	byProc := Table{
		Name:   "clients-cpu",
		Title:  "Forwarding CPU by process",
		Header: append(append([]string{"path", "per"}, cpuLabels...), "total"),
		Notes: []string{"User+system CPU time of each process that forwards, over the run, divided by the work done. " +
			"The ssh client is the same program on both paths; Warren's two Go hops (proxy: decrypt the user's SSH, encrypt into the agent's tunnel; agent: decrypt the tunnel, write to the server) stand where the bastion has one sshd."},
	}
	for i, r := range res {
		for _, w := range []struct {
			per string
			c   cpuShare
		}{{"pgbench transaction", sums[i].cpuPerTx}, {"redis request", sums[i].cpuPerRequest}} {
			if w.c == nil {
				continue
			}
			row := []string{r.Path, w.per}
			for _, l := range cpuLabels {
				if d, ok := w.c[l]; ok {
					row = append(row, usec(d))
				} else {
					row = append(row, "-")
				}
			}
			byProc.Rows = append(byProc.Rows, append(row, usec(w.c.total())))
		}
	}
	perRound := Table{
		Name:   "clients-rounds",
		Title:  "Every round",
		Header: []string{"round", "path", "pgbench TPS", "pgbench latency avg", "redis SET req/s", "redis GET req/s"},
	}
	for round := 0; round < cfg.Rounds; round++ {
		for _, r := range res {
			if round >= len(r.Pg) || round >= len(r.Redis) {
				continue
			}
			p, x := r.Pg[round], r.Redis[round]
			perRound.Rows = append(perRound.Rows, []string{strconv.Itoa(round + 1), r.Path,
				fmt.Sprintf("%.0f", p.TPS), ms3(p.LatencyAvg), fmt.Sprintf("%.0f", x.Tests["SET"].RPS), fmt.Sprintf("%.0f", x.Tests["GET"].RPS)})
		}
	}
	labels := []string{"pgbench TPS", "redis SET req/s", "redis GET req/s"}
	var bars, cdfs []plot.Series
	for i, r := range res {
		s, d := sums[i], sums[0]
		bars = append(bars, plot.Series{Name: r.Path, Values: []float64{
			percentOf(s.tps, d.tps), percentOf(s.setRPS, d.setRPS), percentOf(s.getRPS, d.getRPS)}})
		cdfs = append(cdfs, plot.Series{Name: r.Path, Values: s.lat.Millis()})
	}
	return Report{
		Scenario: "clients",
		Tables:   []Table{t, ratio, byProc, perRound},
		Plots: []Plot{
			{Name: "clients-throughput", Render: func(w io.Writer) error {
				return plot.Bars(w, "Client throughput through each path, % of direct", "% of direct", labels, bars)
			}},
			{Name: "clients-pgbench-latency", Render: func(w io.Writer) error {
				return plot.CDF(w, "pgbench -S transaction latency", "ms", cdfs)
			}},
		},
	}
}

// ratioOf formats x/y as "0.62×".
func ratioOf(x, y float64) string {
	if y == 0 || x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", x/y)
}

func percentOf(x, base float64) float64 {
	if base == 0 {
		return 0
	}
	return 100 * x / base
}

// tail is the end of a program's output, for errors.
func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 1500 {
		s = "…" + s[len(s)-1500:]
	}
	return s
}

// clientsFlags registers the clients scenario's settings.
func clientsFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultClientsConfig()
	if tiny {
		c = TinyClientsConfig()
	}
	fs.IntVar(&c.PgClients, "pg-clients", c.PgClients, "pgbench -c: database connections")
	fs.IntVar(&c.PgThreads, "pg-threads", c.PgThreads, "pgbench -j: pgbench threads")
	fs.DurationVar(&c.PgDuration, "pg-duration", c.PgDuration, "pgbench -T: time per path and round (whole seconds)")
	fs.IntVar(&c.PgScale, "pg-scale", c.PgScale, "pgbench -i -s: scale factor of the database")
	fs.IntVar(&c.RedisRequests, "redis-requests", c.RedisRequests, "redis-benchmark -n: requests per test (SET, GET), path and round")
	fs.IntVar(&c.RedisClients, "redis-clients", c.RedisClients, "redis-benchmark -c: connections")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "every path this many times, interleaved; medians are reported")
	return func(ctx context.Context, env Env) (Report, error) {
		if c.PgClients < 1 || c.PgThreads < 1 || c.PgDuration < time.Second || c.PgScale < 1 || c.RedisRequests < 1 || c.RedisClients < 1 || c.Rounds < 1 {
			return Report{}, errors.New("clients: --pg-clients, --pg-threads, --pg-scale, --redis-requests, --redis-clients and --rounds must be at least 1, --pg-duration at least 1s")
		}
		if c.PgClients%c.PgThreads != 0 {
			return Report{}, fmt.Errorf("clients: --pg-clients (%d) must be a multiple of --pg-threads (%d), as pgbench wants", c.PgClients, c.PgThreads)
		}
		if c.RedisClients > 200 || c.PgClients > 200 {
			return Report{}, errors.New("clients: at most 200 connections per program (Warren allows 256 channels per SSH connection, and one ssh -L carries them all)")
		}
		return RunClients(ctx, env, c)
	}
}
