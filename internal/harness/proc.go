package harness

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process this package started. Its output goes to a log
// file, named in errors so that a failed run can be read.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Command is a process to start.
type Command struct {
	Name string   // for errors
	Log  string   // file for its stdout and stderr
	Bin  string   // executable
	Args []string // arguments
	Env  []string // added to this process's environment
	// Cred runs it as another user and group (nil: as this process).
	Cred *syscall.Credential
}

// Start starts c. The child dies with this process (Pdeathsig), so that a
// test or bench that is killed leaves nothing running.
func Start(c Command) (*Proc, error) {
	f, err := os.Create(c.Log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.Bin, c.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	if c.Env != nil {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	// Its own process group, so that a Ctrl-C at the terminal reaches the
	// harness first and it stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.Cred}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", c.Name, err)
	}
	p := &Proc{Name: c.Name, Log: c.Log, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to end (SIGTERM, and SIGCONT in case it is
// stopped) and kills it if it has not ended within 10 s.
func (p *Proc) Stop() { p.StopWith(syscall.SIGTERM) }

// StopWith is Stop with another signal than SIGTERM (PostgreSQL's fast
// shutdown is SIGINT).
//
// What the process started and left running when it ended (a stock
// sshd's per-connection children, which run in sessions of their own) is
// stopped too, by the ids seen before the signal.
func (p *Proc) StopWith(sig syscall.Signal) {
	var below []procInfo
	if !p.Exited() {
		below = descendants(processes(), p.PID())
	}
	_ = p.cmd.Process.Signal(sig)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
	stopLeftBehind(below)
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Err is how the process ended (nil: exit status 0), once Exited.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Failure describes an early exit, with the end of the log.
func (p *Proc) Failure() error {
	tail, _ := os.ReadFile(p.Log)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.Name, p.err, p.Log, bytes.TrimSpace(tail))
}

// CPU is the user plus system time so far of the process and of its
// children that have ended (a stock sshd serves each connection in a
// child).
func (p *Proc) CPU() (time.Duration, error) { return CPUOf(p.PID()) }

// ExitCPU waits for the process to end and returns the user plus system
// time it used (and its children that it waited for).
func (p *Proc) ExitCPU() time.Duration {
	<-p.done
	st := p.cmd.ProcessState
	return st.UserTime() + st.SystemTime()
}

// RSS is the resident set size now; PeakRSS the highest so far.
func (p *Proc) RSS() (int64, error)     { return procStatusKB(p.PID(), "VmRSS:") }
func (p *Proc) PeakRSS() (int64, error) { return procStatusKB(p.PID(), "VmHWM:") }

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// CPUOf is the user plus system time so far of process pid and of its
// children that have ended.
func CPUOf(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// Fields 14–17 of stat (utime, stime, cutime, cstime) are 11–14 here.
	var ticks int64
	for _, v := range f[11:15] {
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procStatusKB reads a "kB" field of /proc/PID/status, in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// FreePort returns host:port with a port free on ip right now.
func FreePort(ip string) (string, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", fmt.Errorf("no free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitListening waits until addr accepts TCP connections or p exits.
func WaitListening(p *Proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.Exited() {
			return p.Failure()
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening on %s after %s", p.Name, addr, timeout)
}

// BuildWarren builds cmd/warren into a new temporary directory (remove it
// when done), with the race detector when race: test binaries build the
// processes they run as they were built themselves.
func BuildWarren(race bool) (string, error) {
	dir, err := os.MkdirTemp("", "warren-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "warren")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/warren-proxy/warren/cmd/warren")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build warren: %w", err)
	}
	return bin, nil
}
