package membership

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/warren-proxy/warren/internal/model"
)

// TestHelperMember is not a test: TestPausedProxyRejoins runs the test
// binary again with this function as a separate process, so that it can
// stop it with SIGSTOP. It prints "ADDR <gossip addr>" and one line per
// event, and runs until its stdin closes.
func TestHelperMember(t *testing.T) {
	if os.Getenv("MEMBERSHIP_CHILD_ID") == "" {
		t.Skip("helper process for TestPausedProxyRejoins")
	}
	key, _ := hex.DecodeString(os.Getenv("MEMBERSHIP_CHILD_KEY"))
	logger := newTextLogger(os.Stderr)
	m, err := New(Config{
		Meta:           Meta{ProxyID: os.Getenv("MEMBERSHIP_CHILD_ID")},
		BindAddr:       os.Getenv("MEMBERSHIP_CHILD_BIND"),
		Seeds:          []string{os.Getenv("MEMBERSHIP_CHILD_SEED")},
		SecretKey:      key,
		Profile:        model.ProfileLocal,
		RejoinInterval: 200 * time.Millisecond,
		Logger:         logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADDR %s\n", m.GossipAddr())
	go func() {
		for e := range m.Events() {
			fmt.Printf("EVENT %s %s %s\n", e.Type, e.Member.ProxyID, e.Reason)
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	m.Close()
}

// TestPausedProxyRejoins stops a proxy process with SIGSTOP until the
// others declared it dead (and, in the second case, forgot it), then
// resumes it: it must be back in the cluster at once, never locked out.
func TestPausedProxyRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	checkGoroutines(t)
	for _, tc := range []struct {
		name string
		reap time.Duration // others forget the dead after this; 0: profile's 10s
	}{{"declared-dead", 0}, {"forgotten", time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			var nodes []*node
			for i, id := range []string{"p1", "p2"} {
				var opts []nodeOpt
				if i > 0 {
					opts = append(opts, withSeeds(nodes[0].GossipAddr()))
				}
				n := newNode(t, id, fmt.Sprintf("127.0.0.%d", i+1), opts...)
				if tc.reap > 0 {
					n.tweak = func(c *memberlist.Config) { c.GossipToTheDeadTime = tc.reap }
				}
				nodes = append(nodes, n.start(t))
			}
			child := startChild(t, "paused", "127.0.0.3:0", nodes[0].GossipAddr())
			for _, n := range nodes {
				n.waitMembers(t, 10*time.Second, "p1", "p2", "paused")
			}

			if err := child.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			for _, n := range nodes {
				n.waitEvent(t, "paused dead", 15*time.Second, isEvent(EventLeave, "paused", ReasonDead))
			}
			t.Logf("declared dead %v after SIGSTOP", time.Since(stopped).Round(10*time.Millisecond))
			if tc.reap > 0 {
				// Wait for memberlist to forget it (unobservable: see
				// TestPartitionedProxyRejoins).
				time.Sleep(2 * tc.reap)
			}
			if err := child.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			resumed := time.Now()
			for _, n := range nodes {
				n.waitMembers(t, 15*time.Second, "p1", "p2", "paused")
			}
			t.Logf("back in the cluster %v after SIGCONT (paused %v)", time.Since(resumed).Round(10*time.Millisecond), resumed.Sub(stopped).Round(10*time.Millisecond))
			if !waitFor(10*time.Second, func() bool { return child.sees("p1") && child.sees("p2") }) {
				t.Errorf("the resumed proxy does not see both others; its events: %v", child.lines())
			}
		})
	}
}

type childProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  []string
	addr chan string
}

func startChild(t *testing.T, id, bind, seed string) *childProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMember$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"MEMBERSHIP_CHILD_ID="+id, "MEMBERSHIP_CHILD_BIND="+bind, "MEMBERSHIP_CHILD_SEED="+seed,
		"MEMBERSHIP_CHILD_KEY="+hex.EncodeToString(testKey))
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childProc{cmd: cmd, addr: make(chan string, 1)}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "ADDR "); ok {
				c.addr <- a
			}
			c.mu.Lock()
			c.out = append(c.out, line)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		stdin.Close() // the child closes its Membership and exits
		exited := make(chan struct{})
		go func() { <-readDone; _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("child %s did not exit", id)
		}
	})
	select {
	case <-c.addr:
	case <-time.After(20 * time.Second):
		t.Fatalf("child %s did not start; output %v", id, c.lines())
	}
	return c
}

func (c *childProc) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.out...)
}

// sees reports whether the child's last event about id is a join.
func (c *childProc) sees(id string) bool {
	last := ""
	for _, l := range c.lines() {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "EVENT" && f[2] == id {
			last = f[1]
		}
	}
	return last == "join"
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
