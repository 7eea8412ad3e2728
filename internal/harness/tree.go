package harness

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// statFields reads /proc/PID/stat and returns its fields after the
// command name (which may hold spaces and parentheses): field 3 of
// proc(5), the state, is index 0 here.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// procInfo is what tells one process apart: its id, and its start time,
// so that a reused id is not taken for it.
type procInfo struct {
	pid, ppid, sid int
	start          string
}

// processes lists every process in /proc. Those that end while it reads
// are left out.
func processes() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var ps []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil {
			continue
		}
		// proc(5): ppid is field 4, session 6, starttime 22.
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		ps = append(ps, procInfo{pid: pid, ppid: ppid, sid: sid, start: f[19]})
	}
	return ps
}

// descendants are the processes below root in ps.
func descendants(ps []procInfo, root int) []procInfo {
	below := map[int][]procInfo{}
	for _, p := range ps {
		below[p.ppid] = append(below[p.ppid], p)
	}
	var out []procInfo
	next := []int{root}
	for len(next) > 0 {
		pid := next[0]
		next = next[1:]
		for _, c := range below[pid] {
			out = append(out, c)
			next = append(next, c.pid)
		}
	}
	return out
}

// leftBehind is what remains of a stopped process's descendants: those
// seen before it stopped that still run (the same id and start time),
// and every process in a session one of them led (a stock sshd serves
// each connection in a child that calls setsid, and whose own children
// may have started since). Once their parent is gone they belong to init,
// and nothing else would ever stop them.
func leftBehind(before []procInfo, now []procInfo) []procInfo {
	seen := map[int]string{}
	leaders := map[int]bool{}
	for _, p := range before {
		seen[p.pid] = p.start
		if p.sid == p.pid {
			leaders[p.pid] = true
		}
	}
	var out []procInfo
	for _, p := range now {
		if start, ok := seen[p.pid]; ok && start == p.start {
			out = append(out, p)
		} else if leaders[p.sid] {
			out = append(out, p)
		}
	}
	return out
}

// stopLeftBehind ends what a stopped process left running: SIGTERM, then
// SIGKILL to those still there after 2 s.
func stopLeftBehind(before []procInfo) {
	if len(before) == 0 {
		return
	}
	left := leftBehind(before, processes())
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		left = leftBehind(before, processes())
	}
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}
