package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profileAgentAddr is where the path bed's agent-a serves its profiles
// when the path scenario takes profiles (--profiles): an address of its
// own on loopback.
const profileAgentAddr = "127.0.3.1:3081"

// profileTarget is one process to take a CPU profile of: its role on the
// route (entry-proxy, peer-proxy, agent), its /debug/pprof/profile URL and
// the bearer token it takes.
type profileTarget struct {
	role, url, token string
}

// agentDebugExtra writes a token file for agent-a's debug listener in dir
// and returns the agent.yaml lines that turn it on, and the token.
func agentDebugExtra(dir string) (extra, token string, err error) {
	b := make([]byte, 24)
	rand.Read(b)
	token = hex.EncodeToString(b)
	file := filepath.Join(dir, "agent-a-debug-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return fmt.Sprintf("debug_listen: %q\ndebug_token_file: %q\n", profileAgentAddr, file), token, nil
}

// takeProfiles starts a CPU profile of seconds on every target at once,
// and returns a wait that writes each to dir/NAME-ROLE.pprof and reports
// the first failure. Each process profiles itself (Go's pprof endpoint):
// the entry proxy, the peer proxy and the agent are told apart.
func takeProfiles(ctx context.Context, dir, name string, seconds int, targets []profileTarget) func() error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
	}
	for _, t := range targets {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s?seconds=%d", t.url, seconds), nil)
			if err != nil {
				fail(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+t.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				fail(fmt.Errorf("profile of the %s: %w", t.role, err))
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				fail(fmt.Errorf("profile of the %s: %s: %s", t.role, resp.Status, msg))
				return
			}
			f, err := os.Create(filepath.Join(dir, name+"-"+t.role+".pprof"))
			if err != nil {
				fail(err)
				return
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				fail(fmt.Errorf("profile of the %s: %w", t.role, err))
			}
			if err := f.Close(); err != nil {
				fail(err)
			}
		})
	}
	return func() error {
		wg.Wait()
		return first
	}
}
