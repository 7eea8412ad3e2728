package harness

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	f, err := statFields(pid)
	return err == nil && f[0] != "Z"
}

// TestStopEndsWhatTheProcessLeft: a process whose children run in
// sessions of their own (as a stock sshd's per-connection children do)
// leaves nothing running once stopped, including a grandchild in such a
// session; and a process it never started is left alone.
func TestStopEndsWhatTheProcessLeft(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	// The shell starts a child in a new session (setsid, as sshd does for
	// each connection), whose own child sleeps in that session; it writes
	// both ids, then waits. SIGTERM ends the shell and leaves the others
	// to init.
	script := `setsid sh -c 'sleep 300 & echo $$ $! > ` + pids + `.tmp; mv ` + pids + `.tmp ` + pids + `; wait' & wait`
	p, err := Start(Command{Name: "sh", Log: filepath.Join(dir, "sh.log"), Bin: "/bin/sh", Args: []string{"-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	deadline := time.Now().Add(10 * time.Second)
	for len(ids) == 0 {
		if time.Now().After(deadline) {
			p.Kill()
			t.Fatal("the script did not write its ids")
		}
		time.Sleep(10 * time.Millisecond)
		b, err := os.ReadFile(pids)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("ids %q: %v", b, err)
			}
			ids = append(ids, n)
		}
	}
	// A bystander this process started, not below p: it must survive.
	by, err := Start(Command{Name: "bystander", Log: filepath.Join(dir, "by.log"), Bin: "/bin/sleep", Args: []string{"300"}})
	if err != nil {
		t.Fatal(err)
	}
	defer by.Kill()

	p.Stop()
	for _, pid := range ids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d, started below the stopped one, still runs", pid)
		}
	}
	if !alive(by.PID()) {
		t.Error("the bystander was stopped too")
	}
}
