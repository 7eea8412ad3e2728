package connect

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeProxy is a real TCP user port that greets every connection with its
// name, and a real HTTP /readyz on the same loopback address.
type fakeProxy struct {
	cand  Candidate
	ln    net.Listener
	http  *httptest.Server
	ready atomic.Bool
}

func newFakeProxy(t *testing.T, id, region, ip string) *fakeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("no loopback address %s: %v", ip, err)
	}
	p := &fakeProxy{ln: ln}
	p.ready.Store(true)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(id + "\n"))
			c.Close()
		}
	}()
	hln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	p.http = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	p.http.Listener.Close()
	p.http.Listener = hln
	p.http.Start()
	t.Cleanup(func() { p.ln.Close(); p.http.Close() })
	p.cand = Candidate{ID: id, Region: region, UserAddr: ln.Addr().String(), HTTPAddr: hln.Addr().String()}
	return p
}

// dialName runs Connect and returns the name the chosen proxy greeted
// the connection with: the connection really reaches it.
func dialName(t *testing.T, cfg Config) (string, Outcome, error) {
	t.Helper()
	conn, out, err := Connect(context.Background(), cfg)
	if err != nil {
		return "", out, err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read from the chosen proxy: %v", err)
	}
	if got := strings.TrimSpace(line); got != out.Decision.Order[0].ID {
		t.Fatalf("the connection reached %s, the decision says %s", got, out.Decision.Order[0].ID)
	}
	return strings.TrimSpace(line), out, nil
}

// TestConnectStickyThenFailsOver runs against real listeners on
// 127.0.0.2-4: loopback round trips jitter, yet every run picks the same
// proxy; when that proxy says 503 the next run moves at once, and when
// the new one's port closes too, the run after moves again; the state
// file is 0600 throughout.
func TestConnectStickyThenFailsOver(t *testing.T) {
	ps := []*fakeProxy{
		newFakeProxy(t, "proxy-1", "eu", "127.0.0.2"),
		newFakeProxy(t, "proxy-2", "eu", "127.0.0.3"),
		newFakeProxy(t, "proxy-3", "eu", "127.0.0.4"),
	}
	byID := map[string]*fakeProxy{}
	var cands []Candidate
	for _, p := range ps {
		cands = append(cands, p.cand)
		byID[p.cand.ID] = p
	}
	state := filepath.Join(t.TempDir(), "connect.state")
	cfg := Config{Candidates: cands, StatePath: state}
	home, _, err := dialName(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		got, _, err := dialName(t, cfg)
		if err != nil || got != home {
			t.Fatalf("run %d: got %s (%v), want the home %s kept", i, got, err, home)
		}
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v, want mode 0600", fi, err)
	}

	byID[home].ready.Store(false)
	next, out, err := dialName(t, cfg)
	if err != nil || next == home {
		t.Fatalf("home %s not ready: got %s (%v), want another", home, next, err)
	}
	if r := out.Results[home]; !strings.Contains(r.NotReady, "503") {
		t.Fatalf("the not-ready home's result: %+v", r)
	}
	byID[next].ln.Close()
	third, out, err := dialName(t, cfg)
	if err != nil || third == home || third == next {
		t.Fatalf("%s down and %s not ready: got %s (%v)", next, home, third, err)
	}
	if r := out.Results[next]; r.Err == nil || !strings.Contains(r.Err.Error(), "refused") {
		t.Fatalf("the closed proxy's result: %+v", r)
	}

	byID[third].http.Close()
	byID[third].ln.Close()
	_, _, err = dialName(t, cfg)
	if err == nil {
		t.Fatal("no usable proxy, yet Connect succeeded")
	}
	for _, want := range []string{home + " (", "503", next + " (", "connection refused", third + " ("} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestConnectBlackholedHome: a home whose user port takes connections but
// whose /readyz hangs (a stopped process: the kernel still accepts) is
// not used; the run takes no longer than the timeout.
func TestConnectBlackholedHome(t *testing.T) {
	good := newFakeProxy(t, "proxy-2", "eu", "127.0.0.3")
	hung, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip(err)
	}
	defer hung.Close()
	hungHTTP, err := net.Listen("tcp", "127.0.0.2:0") // never accepted: the backlog takes the connect
	if err != nil {
		t.Fatal(err)
	}
	defer hungHTTP.Close()
	state := filepath.Join(t.TempDir(), "connect.state")
	SaveState(state, &State{Homes: map[string]string{"": "proxy-1"}})
	cfg := Config{Candidates: []Candidate{
		{ID: "proxy-1", Region: "eu", UserAddr: hung.Addr().String(), HTTPAddr: hungHTTP.Addr().String()},
		good.cand,
	}, StatePath: state, Timeout: 300 * time.Millisecond}
	start := time.Now()
	got, out, err := dialName(t, cfg)
	if err != nil || got != "proxy-2" {
		t.Fatalf("got %s (%v), want proxy-2", got, err)
	}
	if !strings.Contains(out.Results["proxy-1"].NotReady, "did not answer") {
		t.Fatalf("the hung proxy's result: %+v", out.Results["proxy-1"])
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s with a 300ms timeout", d)
	}
}

// TestConnectReturnsEarlyForTheHome: a candidate whose /readyz never
// answers does not hold up a run once the home has answered ready, since
// it cannot be clearly better than the home.
func TestConnectReturnsEarlyForTheHome(t *testing.T) {
	home := newFakeProxy(t, "proxy-1", "eu", "127.0.0.2")
	slow := newFakeProxy(t, "proxy-9", "eu", "127.0.0.3")
	hungHTTP, err := net.Listen("tcp", "127.0.0.3:0") // never accepted
	if err != nil {
		t.Fatal(err)
	}
	defer hungHTTP.Close()
	slow.cand.HTTPAddr = hungHTTP.Addr().String()
	state := filepath.Join(t.TempDir(), "connect.state")
	SaveState(state, &State{Homes: map[string]string{"": "proxy-1"}})
	cfg := Config{Candidates: []Candidate{home.cand, slow.cand}, StatePath: state, Timeout: 10 * time.Second}
	start := time.Now()
	got, out, err := dialName(t, cfg)
	if err != nil || got != "proxy-1" {
		t.Fatalf("got %s (%v)", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s: waited for a candidate that could not beat the home", d)
	}
	if r := out.Results["proxy-9"]; r.Usable() {
		t.Fatalf("a candidate not waited for counts as usable: %+v", r)
	}
}

func TestParseProxies(t *testing.T) {
	good := "# comment\nproxy-1 eu 10.0.0.1:3023 10.0.0.1:3080\n\nproxy-2 us [2001:db8::1]:3023\n"
	cands, err := ParseProxies(strings.NewReader(good))
	if err != nil || len(cands) != 2 || cands[1].UserAddr != "[2001:db8::1]:3023" || cands[1].HTTPAddr != "" {
		t.Fatalf("got %+v, %v", cands, err)
	}
	if again, _ := ParseProxies(strings.NewReader(string(FormatProxies(cands)))); len(again) != 2 || again[0] != cands[0] {
		t.Fatalf("FormatProxies does not read back: %+v", again)
	}
	bad := "proxy-1 eu\n-bad eu 10.0.0.1:3023\nproxy-2 e/u 10.0.0.1:3023\nproxy-3 eu 10.0.0.1\nproxy-4 eu 10.0.0.1:0\nproxy-5 eu 0.0.0.0:3023\nproxy-6 eu 10.0.0.1:3023 nohost\nproxy-7 eu 10.0.0.1:3023\nproxy-7 eu 10.0.0.2:3023\n"
	_, err = ParseProxies(strings.NewReader(bad))
	if err == nil {
		t.Fatal("bad lines accepted")
	}
	for _, want := range []string{"line 1: want ID REGION", "line 2: proxy id", "line 3: region", "line 4: user address", "line 5: user address", "line 6: user address", "line 7: HTTP address", "line 9: proxy proxy-7 is listed twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

func TestLoadStateDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	os.WriteFile(path, []byte("{not json"), 0o600)
	st, err := LoadState(path)
	if err == nil || st == nil || len(st.Homes) != 0 {
		t.Fatalf("damaged state: %+v %v", st, err)
	}
	os.WriteFile(path, []byte(`{"homes":{"":"proxy-1","bad name":"x"},"samples":{"proxy-1":[{"at":"2026-01-01T00:00:00Z","rtt_ns":-5}]}}`), 0o600)
	st, _ = LoadState(path)
	if len(st.Homes) != 1 || len(st.Samples) != 0 {
		t.Fatalf("invalid entries kept: %+v", st)
	}
}
