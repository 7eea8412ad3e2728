package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/storage/recordings"
)

// syncBuffer is a buffer a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// localRecordings is what `recordings ls --local` says on proxy.
func (c *Cluster) localRecordings(proxy string) []recordings.Meta {
	res := c.Run(nil, "ssh", proxy, "recordings", "ls", "--local", "--json")
	var out []recordings.Meta
	for line := range strings.Lines(res.Stdout) {
		var m recordings.Meta
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestRecordingSurvivesKillsOfItsProxies is the brief's acceptance case:
// an `ssh -tt` session enters through the proxy that holds no tunnel of
// the agent; both proxies the agent's tunnels (and uploads) are on are
// killed, one after the other, during the session, which resumes and runs
// to its end. The recording holds every byte the user saw, with a marker
// where the session resumed; it reaches the entry proxy (where the agent
// re-homed), and, once a killed proxy is back, that one too.
func TestRecordingSurvivesKillsOfItsProxies(t *testing.T) {
	c := New(t, Options{
		Proxies: 3,
		Runner:  RunProcesses,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}},
		Agent: func(_ string, cfg *agent.Config) {
			cfg.ConnectionCount = 2
			cfg.Recording.RetryMin, cfg.Recording.RetryMax = 100*time.Millisecond, 500*time.Millisecond
		},
	})
	a := c.Agents["agent-1"]
	c.WaitFor("two tunnels", func() bool { return distinctTunnels(a, 2) })
	held := a.TunnelProxies()
	var entry string
	for _, p := range c.Proxies {
		if !slices.Contains(held, p.ID()) {
			entry = p.ID()
		}
	}
	c.WaitRoutable("node1")

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", c.SSHConfig, "-tt", "-J", entry, "node1",
		`printf 'start €\n'; read a; printf 'after-first %s\n' "$a"; read b; printf 'after-second %s\n' "$b"; seq 1 200; printf 'end ✓\n'`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	c.WaitFor("the session's first line", func() bool { return strings.Contains(stdout.String(), "start €") })

	c.KillProxy(held[0])
	fmt.Fprintf(stdin, "one\n")
	c.WaitFor("the session after the first kill", func() bool { return strings.Contains(stdout.String(), "after-first one") })
	c.WaitFor("the agent's tunnel on the entry proxy", func() bool { return slices.Contains(a.TunnelProxies(), entry) })
	c.KillProxy(held[1])
	fmt.Fprintf(stdin, "two\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ssh -tt: %v; stderr %q; stdout %q", err, stderr.String(), stdout.String())
		}
	case <-ctx.Done():
		t.Fatalf("the session did not end; stdout %q", stdout.String())
	}
	saw := stdout.String()
	if !strings.Contains(saw, "after-second two") || !strings.Contains(saw, "end ✓") {
		t.Fatalf("the session did not run to its end: %q", saw)
	}

	var rec recordings.Meta
	c.WaitFor("the recording on the entry proxy", func() bool {
		l := c.localRecordings(entry)
		if len(l) == 1 {
			rec = l[0]
		}
		return len(l) == 1
	})
	res := c.Run(nil, "ssh", entry, "recordings", "get", rec.ID)
	if res.Code != 0 {
		t.Fatalf("recordings get: code %d stderr %q", res.Code, res.Stderr)
	}
	cast := res.Stdout
	rd, err := asciicast.NewReader(strings.NewReader(cast), asciicast.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	var markers []string
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Code {
		case asciicast.Output:
			got.WriteString(ev.Data)
		case asciicast.Marker:
			markers = append(markers, ev.Data)
		}
	}
	if got.String() != saw {
		t.Errorf("recorded output differs from what ssh showed:\nrecorded %q\nssh      %q", got.String(), saw)
	}
	if len(markers) == 0 || !strings.Contains(markers[0], "resumed") {
		t.Errorf("markers %q: want one where the session resumed", markers)
	}

	// A killed proxy comes back: the agent, which kept the recording for
	// a second replica, gives it the same bytes.
	back := held[0]
	c.AddProxy(int(back[len(back)-1] - '0'))
	c.WaitMembers(2)
	c.WriteSSHConfig()
	c.WaitFor("the recording on "+back+" after its restart", func() bool { return len(c.localRecordings(back)) == 1 })
	res = c.Run(nil, "ssh", back, "recordings", "get", rec.ID)
	if res.Code != 0 || res.Stdout != cast {
		t.Errorf("%s holds other bytes (code %d): %d bytes, want %d", back, res.Code, len(res.Stdout), len(cast))
	}
}
