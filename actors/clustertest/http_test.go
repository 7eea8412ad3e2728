package clustertest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/actors/agent"
)

// TestHTTPAPIAuthenticates: health checks are open; the JSON API and the
// profiles answer only with the cluster's API token, and say how to get
// it otherwise.
func TestHTTPAPIAuthenticates(t *testing.T) {
	c := New(t, Options{Agents: map[string][]agent.ResourceConfig{
		"agent-1": {{Name: "node1", Kind: "ssh"}},
	}})
	token, err := c.Auth.APIToken()
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + c.Proxy.HTTPAddr()
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get("/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	for _, path := range []string{"/api/v1/resources", "/api/v1/status", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		for _, tok := range []string{"", "wrong-" + token} {
			code, body := get(path, tok)
			if code != http.StatusUnauthorized || !strings.Contains(body, "api_token") {
				t.Errorf("%s with token %q: %d %q, want 401 naming api_token", path, tok, code, body)
			}
		}
		if code, _ := get(path, token); code != 200 {
			t.Errorf("%s with the API token: %d", path, code)
		}
	}
	_, body := get("/api/v1/resources", token)
	var list struct {
		Proxy     string `json:"proxy"`
		Resources []struct {
			Name    string `json:"name"`
			Healthy int    `json:"healthy"`
		} `json:"resources"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("resources: %v: %s", err, body)
	}
	if list.Proxy != c.Proxy.ID() || len(list.Resources) != 1 || list.Resources[0].Name != "node1" || list.Resources[0].Healthy != 1 {
		t.Errorf("resources = %+v", list)
	}
	if strings.Contains(body, token) {
		t.Error("the API token appears in an answer")
	}
}
