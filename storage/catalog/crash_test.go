package catalog_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/catalog"
)

// The crash test runs its own test binary again as a child process (the
// usual helper-process pattern): the child writes records and reports each
// one on stdout once the write has returned, the parent SIGKILLs it and then
// checks that every record the child reported is in the catalog. Only a real
// process kill shows what a crash keeps; closing the Store would flush.
const (
	envCrashDir  = "WARREN_CATALOG_CRASH_DIR"
	envCrashOpts = "WARREN_CATALOG_CRASH_OPTS" // "default" or "nosync"
	// envCrashStep makes the child wait for a byte on stdin before each
	// write, so that the parent kills it at a known point: right after a
	// write returned and was reported, with nothing else in flight.
	envCrashStep = "WARREN_CATALOG_CRASH_STEP"

	// crashKillAfter is how many "stored" lines the parent reads before
	// it kills the child: enough for several writes of each kind and for
	// the WAL to hold a partial block, and few enough to stay within a
	// second or two even when every write waits for an fsync.
	crashKillAfter = 150
	// crashMaxWrites bounds the child if the parent never kills it.
	crashMaxWrites = 100_000
)

// crashRecord is what the child writes as its n-th write: mostly agents and
// resource batches, as heartbeats write them, and now and then a
// configuration entry. A configuration write is synced whatever the options,
// and a synced write makes Pebble write out the whole WAL tail, so the
// writes between two of them are the ones a lax default would lose.
func crashRecord(n int) (kind, key string) {
	switch {
	case n%40 == 39:
		return "config", fmt.Sprintf("config/%06d", n)
	case n%2 == 0:
		return "agent", fmt.Sprintf("agent-%06d", n)
	default:
		return "resource", fmt.Sprintf("resource-%06d", n)
	}
}

// TestHelperProcess is the child of TestCrashKeepsReportedWrites. It does
// nothing in a normal test run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		return
	}
	opts := catalog.Options{}
	if os.Getenv(envCrashOpts) == "nosync" {
		opts.NoSync = true
	}
	s, err := catalog.Open(dir, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open: %v\n", err)
		os.Exit(2)
	}
	// The parent holds our stdin open; if it dies without killing us,
	// stdin ends and we stop rather than write forever.
	step := os.Getenv(envCrashStep) != ""
	if !step {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(3)
		}()
	}
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	for n := range crashMaxWrites {
		if step {
			if _, err := in.ReadByte(); err != nil {
				os.Exit(3)
			}
		}
		now := t0.Add(time.Duration(n) * time.Second)
		var err error
		switch kind, key := crashRecord(n); kind {
		case "agent":
			err = s.PutAgent(model.Agent{ID: key, ProxyID: "proxy-1", Connected: now, LastSeen: now})
		case "resource":
			err = s.PutResources(res(key, "agent-1", now), res(key, "agent-2", now))
		case "config":
			err = s.PutConfig(catalog.ConfigEntry{Key: key, Value: []byte(`{"n":` + strconv.Itoa(n) + `}`), Wall: now.UnixNano(), Node: "proxy-1"})
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "write %d: %v\n", n, err)
			os.Exit(2)
		}
		// Reported only after the write returned, and flushed at once:
		// the parent may kill us right after reading this line.
		fmt.Fprintf(out, "stored %d\n", n)
		if err := out.Flush(); err != nil {
			os.Exit(2)
		}
	}
	os.Exit(0)
}

// crashChild runs the helper with opts ("default" or "nosync") against
// dir, kills it with SIGKILL after it reported killAfter writes, and returns
// how many writes it reported in all: lines it wrote before it died are read
// to the end. In step mode the child writes only when told to, and the kill
// lands while it waits; otherwise it lands wherever the child is.
func crashChild(t *testing.T, dir, opts string, step bool, killAfter int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashOpts+"="+opts)
	if step {
		cmd.Env = append(cmd.Env, envCrashStep+"=1")
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	// Whatever happens below, the child does not outlive the test.
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Errorf("kill helper %d: %v", cmd.Process.Pid, err)
			}
		}
	}
	defer kill()

	next := func() {
		if _, err := stdin.Write([]byte{1}); err != nil {
			t.Fatalf("tell helper to write: %v", err)
		}
	}
	if step {
		next()
	}
	reported, lines := -1, 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "stored %d", &n); err != nil {
			t.Fatalf("helper wrote %q, want \"stored N\"", sc.Text())
		}
		if n != reported+1 {
			t.Fatalf("helper reported %d after %d", n, reported)
		}
		reported = n
		switch lines++; {
		case lines == killAfter:
			kill()
		case step && lines < killAfter:
			next()
		}
	}
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !killed || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v before it was killed, after %d writes; stderr:\n%s", err, reported+1, stderr.String())
	}
	return reported + 1
}

// TestCrashKeepsReportedWrites kills a process that is writing to a catalog
// with the default options and checks that every write that had returned in
// it is there after the crash: once killed right after a write returned,
// once while it writes as fast as it can.
func TestCrashKeepsReportedWrites(t *testing.T) {
	for _, tt := range []struct {
		name string
		step bool
	}{{"after a write", true}, {"while writing", false}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			reported := crashChild(t, dir, "default", tt.step, crashKillAfter)
			if missing := missingAfterCrash(t, dir, reported); len(missing) > 0 {
				t.Errorf("after SIGKILL, %d records of the %d writes the process reported stored are missing, e.g. %s", len(missing), reported, strings.Join(missing[:min(5, len(missing))], ", "))
			}
		})
	}
}

// TestCrashNoSync checks what Options.NoSync promises: a crash loses at
// most the agent and resource writes since the last synced write, here the
// last configuration entry the process reported.
func TestCrashNoSync(t *testing.T) {
	dir := t.TempDir()
	reported := crashChild(t, dir, "nosync", true, crashKillAfter)
	lastSynced := -1
	for n := range reported {
		if kind, _ := crashRecord(n); kind == "config" {
			lastSynced = n
		}
	}
	if missing := missingAfterCrash(t, dir, lastSynced+1); len(missing) > 0 {
		t.Errorf("after SIGKILL, %d records written before the last synced write (%d) are missing, e.g. %s", len(missing), lastSynced, strings.Join(missing[:min(5, len(missing))], ", "))
	}
	lost := missingAfterCrash(t, dir, reported)
	t.Logf("NoSync: the crash lost %d records, of the %d writes after the last synced one", len(lost), reported-lastSynced-1)
}

// missingAfterCrash reopens the catalog in dir and lists the first reported
// writes it does not hold.
func missingAfterCrash(t *testing.T, dir string, reported int) []string {
	t.Helper()
	s := open(t, dir)
	defer s.Close()
	agents, resources := load(t, s)
	config, err := s.LoadConfig()
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	have := map[string]bool{}
	for _, a := range agents {
		have["agent "+a.ID] = true
	}
	for _, r := range resources {
		have["resource "+r.Name+"@"+r.AgentID] = true
	}
	for _, c := range config {
		have["config "+c.Key] = true
	}
	var missing []string
	for n := range reported {
		kind, key := crashRecord(n)
		want := []string{kind + " " + key}
		if kind == "resource" {
			want = []string{"resource " + key + "@agent-1", "resource " + key + "@agent-2"}
		}
		for _, w := range want {
			if !have[w] {
				missing = append(missing, w)
			}
		}
	}
	return missing
}
