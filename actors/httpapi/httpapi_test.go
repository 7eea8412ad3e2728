package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

type fakeProxy struct {
	notReady    string
	token       string // the API token; "s3cret" when empty
	metricsOpen bool
}

func (f *fakeProxy) ID() string       { return "p1" }
func (f *fakeProxy) Region() string   { return "eu" }
func (f *fakeProxy) NotReady() string { return f.notReady }
func (f *fakeProxy) Snapshot() *router.Snapshot {
	return &router.Snapshot{Resources: map[string][]router.Endpoint{
		"db": {{Resource: model.Resource{Name: "db", Kind: model.KindTCP, AgentID: "a1", Healthy: true}, Online: true}},
	}}
}
func (f *fakeProxy) Status() model.Statuses { return model.Statuses{{ID: "p1", State: "alive"}} }
func (f *fakeProxy) Sessions() []model.LiveSession {
	return []model.LiveSession{{ID: "s1", User: "alice", Resource: "db", Agent: "a1", Path: "p1>a1"}}
}
func (f *fakeProxy) Failovers() []model.Failover {
	return []model.Failover{{Kind: model.FailoverConnect, Session: "s1", Resource: "db", From: "p1>a0", To: "p1>a1"}}
}
func (f *fakeProxy) apiToken() string {
	if f.token == "" {
		return "s3cret"
	}
	return f.token
}
func (f *fakeProxy) CheckAPIToken(tok string) bool { return tok == f.apiToken() }
func (f *fakeProxy) APITokenMAC(msg []byte) ([]byte, error) {
	m := hmac.New(sha256.New, []byte(f.apiToken()))
	m.Write(msg)
	return m.Sum(nil), nil
}
func (f *fakeProxy) MetricsOpen() bool { return f.metricsOpen }
func (f *fakeProxy) Metrics() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("warren_ready 1\n")) })
}

func get(t *testing.T, h http.Handler, path, token string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestReadyzSaysWhy(t *testing.T) {
	f := &fakeProxy{notReady: "waiting for the peers' routes and configuration"}
	h := Handler(f)
	if code, body := get(t, h, "/readyz", ""); code != 503 || !strings.Contains(body, "waiting for the peers") {
		t.Errorf("not ready: %d %q", code, body)
	}
	f.notReady = ""
	if code, _ := get(t, h, "/readyz", ""); code != 200 {
		t.Errorf("ready: %d", code)
	}
	if code, _ := get(t, h, "/healthz", ""); code != 200 {
		t.Errorf("healthz: %d", code)
	}
}

func TestAPIAndProfilesNeedTheToken(t *testing.T) {
	h := Handler(&fakeProxy{})
	for _, path := range []string{"/api/v1/resources", "/api/v1/status", "/api/v1/overview", "/debug/pprof/", "/metrics"} {
		for _, tok := range []string{"", "wrong", "s3cret "} {
			if code, body := get(t, h, path, tok); code != 401 || !strings.Contains(body, "api_token") {
				t.Errorf("%s with token %q: %d %q", path, tok, code, body)
			}
		}
	}
	code, body := get(t, h, "/api/v1/resources?name=db&name=nope", "s3cret")
	var out struct {
		Proxy     string          `json:"proxy"`
		Resources []model.Summary `json:"resources"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Proxy != "p1" || len(out.Resources) != 1 || out.Resources[0].Name != "db" {
		t.Errorf("resources: %d %q", code, body)
	}
}

func TestMetricsOpenOnlyWhenConfigured(t *testing.T) {
	if code, body := get(t, Handler(&fakeProxy{}), "/metrics", "s3cret"); code != 200 || body != "warren_ready 1\n" {
		t.Errorf("with the token: %d %q", code, body)
	}
	if code, body := get(t, Handler(&fakeProxy{metricsOpen: true}), "/metrics", ""); code != 200 || body != "warren_ready 1\n" {
		t.Errorf("open, without a token: %d %q", code, body)
	}
	if code, _ := get(t, Handler(&fakeProxy{metricsOpen: true}), "/api/v1/status", ""); code != 401 {
		t.Errorf("metrics_open opened the API too: %d", code)
	}
}
