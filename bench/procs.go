package bench

import (
	"os"
	"syscall"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
)

// Proc is a child process a scenario started (warren, sshd, a client).
type Proc = harness.Proc

// startProc runs bin with args, output to logPath.
func startProc(name, logPath, bin string, args ...string) (*Proc, error) {
	return harness.Start(harness.Command{Name: name, Log: logPath, Bin: bin, Args: args})
}

// startProcAs is startProc with the process running as cred's user and
// group.
func startProcAs(name, logPath string, cred *syscall.Credential, bin string, args ...string) (*Proc, error) {
	return harness.Start(harness.Command{Name: name, Log: logPath, Bin: bin, Args: args, Cred: cred})
}

// selfCPU is this process's CPU time (the load generators').
func selfCPU() time.Duration {
	d, _ := harness.CPUOf(os.Getpid())
	return d
}
