package agent

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/transport/pki"
)

// TestDebugListenServesProfilesBehindItsToken: with debug_listen set, the
// agent serves Go's profiles to a request with the token of
// debug_token_file, and 401 with where the token is to one without it or
// with another; the token never reaches the log.
func TestDebugListenServesProfilesBehindItsToken(t *testing.T) {
	auth, err := pki.Init(filepath.Join(t.TempDir(), "pki"), pki.InitOptions{ClusterName: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	p := startFakeProxy(t, auth, "p1")
	const secret = "0123456789abcdef-debug-token"
	tokFile := filepath.Join(t.TempDir(), "debug_token")
	if err := os.WriteFile(tokFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	a, err := New(Config{
		Name: "debug-agent", DataDir: t.TempDir(), Proxies: []string{p.addr}, JoinToken: fakeToken,
		Resources:   []ResourceConfig{{Name: "svc", Kind: "tcp", Addr: "127.0.0.1:9"}},
		DebugListen: "127.0.0.1:0", DebugTokenFile: tokFile,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	base := "http://" + a.DebugAddr().String()
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tok := range []string{"", "wrong", secret + "x", strings.ToUpper(secret)} {
		code, body := get("/debug/pprof/", tok)
		if code != http.StatusUnauthorized || !strings.Contains(body, "debug_token_file") {
			t.Errorf("token %q: got %d %q, want 401 naming debug_token_file", tok, code, body)
		}
	}
	if code, body := get("/debug/pprof/", secret); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("with the token: got %d %.80q, want 200 and the index", code, body)
	}
	if code, body := get("/debug/pprof/profile?seconds=1", secret); code != http.StatusOK || len(body) == 0 {
		t.Errorf("CPU profile: got %d, %d bytes", code, len(body))
	}
	if code, _ := get("/api/v1/status", secret); code != http.StatusUnauthorized && code != http.StatusNotFound {
		t.Errorf("a path other than the profiles: got %d", code)
	}
	a.Close()
	if strings.Contains(logs.String(), secret) {
		t.Error("the debug token reached the log")
	}
	if _, err := http.Get(base + "/debug/pprof/"); err == nil {
		t.Error("the debug listener still answers after Close")
	}
}

// TestDebugListenRefusesBadSettings: each bad setting gets one error that
// names the field and what to do, before anything listens.
func TestDebugListenRefusesBadSettings(t *testing.T) {
	write := fileWriter(t, t.TempDir())
	base := Config{DataDir: t.TempDir(), Proxies: []string{"127.0.0.1:1"}, JoinToken: "x",
		Resources: []ResourceConfig{{Name: "svc", Kind: "tcp", Addr: "127.0.0.1:9"}}}
	for _, tt := range []struct {
		name, listen, file, want string
		atStart                  bool
	}{
		{"no token file", "127.0.0.1:0", "", "debug_token_file: required with debug_listen", false},
		{"token file alone", "", write("alone", "0123456789abcdef\n", 0o600), "debug_token_file: set without debug_listen", false},
		{"not host:port", "localhost", write("ok", "0123456789abcdef\n", 0o600), `debug_listen: "localhost" is not host:port`, false},
		{"short token", "127.0.0.1:0", write("short", "abc\n", 0o600), "use 16 or more", true},
		{"readable by others", "127.0.0.1:0", write("open", "0123456789abcdef\n", 0o644), "has mode 0644; run chmod 600", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.DebugListen, c.DebugTokenFile = tt.listen, tt.file
			a, err := New(c)
			if !tt.atStart {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("New: got %v, want an error with %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(t.Context()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start: got %v, want an error with %q", err, tt.want)
			}
		})
	}
}
