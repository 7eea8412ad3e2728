package bench

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// needClientTools skips a test when PostgreSQL, Redis or the stock sshd
// is not installed, unless CI says they must be (.ci/run installs them).
func needClientTools(t *testing.T) {
	t.Helper()
	needSshd(t)
	if _, err := findClientTools(); err != nil {
		if os.Getenv("WARREN_BENCH_REQUIRE_CLIENTS") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// TestClientsTiny runs pgbench and redis-benchmark through each path and
// checks that every figure was measured. It asserts no timing.
func TestClientsTiny(t *testing.T) {
	needClientTools(t)
	pgdata := filepath.Join(os.TempDir(), "warren-bench-pgdata-*")
	before, _ := filepath.Glob(pgdata)
	rep := runTiny(t, "clients")
	main := tableNamed(t, rep, "clients")
	if len(main.Rows) != 3 {
		t.Fatalf("%d paths, want 3", len(main.Rows))
	}
	for i := range main.Rows {
		row := rowOf(t, main, i)
		for _, col := range []string{"pgbench TPS", "pgbench latency avg", "pgbench p50", "redis SET req/s", "redis GET req/s", "SET p50", "GET p50"} {
			if v := row(col); v == "-" || v == "0" || strings.HasPrefix(v, "0.000 ") {
				t.Errorf("%s: %s not measured: %q", row("path"), col, v)
			}
		}
		if i > 0 {
			for _, col := range []string{"forwarding CPU per pgbench tx", "forwarding CPU per redis request"} {
				if v := row(col); v == "-" || strings.HasPrefix(v, "0.0 ") {
					t.Errorf("%s: %s not measured: %q", row("path"), col, v)
				}
			}
		}
	}
	if r := tableNamed(t, rep, "clients-ratio"); len(r.Rows) != 9 {
		t.Errorf("ratio table has %d rows, want 9", len(r.Rows))
	}
	// PostgreSQL's data directory (outside the scratch directory when
	// run as root) is gone.
	after, _ := filepath.Glob(pgdata)
	for _, d := range after {
		if !slices.Contains(before, d) {
			t.Errorf("left behind: %s", d)
		}
	}
}

func TestClientsParse(t *testing.T) {
	out := `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 20 s
number of transactions actually processed: 181234
number of failed transactions: 0 (0.000%)
latency average = 0.883 ms
initial connection time = 21.345 ms
tps = 9061.712345 (without initial connection time)
`
	r, err := parsePgbench(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.TPS != 9061.712345 || r.LatencyAvg != 883*time.Microsecond || r.Transactions != 181234 {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parsePgbench(strings.Replace(out, "failed transactions: 0", "failed transactions: 3", 1)); err == nil {
		t.Error("failed transactions not reported")
	}
	if _, err := parsePgbench("connection to server failed\n"); err == nil {
		t.Error("no summary not reported")
	}

	log := filepath.Join(t.TempDir(), "pgbench.123")
	if err := os.WriteFile(log, []byte("0 0 412 0 1764650000 123456\n1 0 1250 0 1764650000 123999\n0 1 failed 0 1764650000 124000\nshort\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := readPgbenchLog(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 2 || d[0] != 412*time.Microsecond || d[1] != 1250*time.Microsecond {
		t.Errorf("log latencies %v", d)
	}

	// redis-tools 7: a header and percentiles.
	tests, err := parseRedisCSV(`"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","33898.30","0.179","0.064","0.167","0.295","0.367","1.887"
"GET","27777.78","0.233","0.040","0.167","0.391","3.047","4.143"
`)
	if err != nil {
		t.Fatal(err)
	}
	if g := tests["GET"]; g.RPS != 27777.78 || g.P50 != 167*time.Microsecond || g.P99 != 3047*time.Microsecond {
		t.Errorf("GET %+v", g)
	}
	// Older redis-benchmark: no header, no percentiles.
	tests, err = parseRedisCSV("\"SET\",\"41000.50\"\n\"GET\",\"42000.00\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := tests["SET"]; s.RPS != 41000.50 || s.P50 != 0 {
		t.Errorf("SET %+v", s)
	}
}

// TestClientsReport checks the tables and plots made of given figures.
func TestClientsReport(t *testing.T) {
	cfg := DefaultClientsConfig()
	cfg.Rounds, cfg.RedisRequests = 2, 200000
	// Forwarding CPU per run: 10 s per 100,000 transactions, 8 s per
	// 2 × 200,000 redis requests.
	var cpu cpuShare
	pg := func(tps float64, lat time.Duration) pgRun {
		cpu = cpuShare{"ssh client": 2 * time.Second, "x": 8 * time.Second}
		if tps > 10000 {
			cpu = nil // direct
		}
		return pgRun{TPS: tps, LatencyAvg: lat, Transactions: 100000, Latencies: Durations{lat, lat, 2 * lat}, CPU: cpu}
	}
	redis := func(set, get float64) redisRun {
		cpu = cpuShare{"ssh client": 2 * time.Second, "x": 6 * time.Second}
		if set > 30000 {
			cpu = nil // direct
		}
		return redisRun{Tests: map[string]redisTest{
			"SET": {RPS: set, P50: 200 * time.Microsecond, P99: time.Millisecond},
			"GET": {RPS: get, P50: 300 * time.Microsecond, P99: time.Millisecond},
		}, CPU: cpu}
	}
	res := []*clientsResult{
		{Path: "direct (no hop)", Pg: []pgRun{pg(16000, 500*time.Microsecond), pg(15000, 500*time.Microsecond)}, Redis: []redisRun{redis(40000, 40000), redis(40000, 40000)}},
		{Path: "sshd", Pg: []pgRun{pg(5000, time.Millisecond), pg(4000, time.Millisecond)}, Redis: []redisRun{redis(20000, 20000), redis(20000, 20000)}},
		{Path: "Warren", Pg: []pgRun{pg(3000, 2*time.Millisecond), pg(2000, 2*time.Millisecond)}, Redis: []redisRun{redis(10000, 15000), redis(10000, 15000)}},
	}
	rep := clientsReport(cfg, res)
	ratio := tableNamed(t, rep, "clients-ratio")
	want := map[string][]string{
		"pgbench TPS (higher is better)":        {"15000", "4000", "2000", "0.50×"},
		"pgbench latency p50 (lower is better)": {"0.500 ms", "1.000 ms", "2.000 ms", "2.00×"},
		"redis GET req/s (higher is better)":    {"40000", "20000", "15000", "0.75×"},
		"forwarding CPU per pgbench tx":         {"-", "100.0 µs", "100.0 µs", "1.00×"},
		"forwarding CPU per redis request":      {"-", "20.0 µs", "20.0 µs", "1.00×"},
		"redis SET p50 (lower is better)":       {"0.200 ms", "0.200 ms", "0.200 ms", "1.00×"},
	}
	for i := range ratio.Rows {
		row := rowOf(t, ratio, i)
		w, ok := want[row("figure")]
		if !ok {
			continue
		}
		delete(want, row("figure"))
		for j, col := range []string{"direct (no hop)", "stock sshd bastion", "Warren", "Warren / sshd"} {
			if got := row(col); got != w[j] {
				t.Errorf("%s, %s: got %q, want %q", row("figure"), col, got, w[j])
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("rows missing: %v", want)
	}
	byProc := tableNamed(t, rep, "clients-cpu")
	if len(byProc.Rows) != 4 {
		t.Fatalf("%d CPU rows, want 4 (2 forwarding paths × 2 programs)", len(byProc.Rows))
	}
	if row := rowOf(t, byProc, 0); row("ssh client") != "20.0 µs" || row("sshd") != "-" || row("total") != "100.0 µs" {
		t.Errorf("CPU row %v", byProc.Rows[0])
	}
	if rounds := tableNamed(t, rep, "clients-rounds"); len(rounds.Rows) != 6 {
		t.Errorf("%d per-round rows, want 6", len(rounds.Rows))
	}
	for _, tb := range rep.Tables {
		for _, r := range tb.Rows {
			if len(r) != len(tb.Header) {
				t.Errorf("table %s: row %v does not fit header %v", tb.Name, r, tb.Header)
			}
		}
	}
	for _, p := range rep.Plots {
		if err := p.Render(io.Discard); err != nil {
			t.Errorf("plot %s: %v", p.Name, err)
		}
	}
}
