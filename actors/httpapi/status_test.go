package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

// do sends one request to h with the given headers (and form, for a
// post) and returns the response with its body read.
func do(t *testing.T, h http.Handler, method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// signIn posts tok to the sign-in form as the page itself would, and
// returns the response and its cookie, if any.
func signIn(t *testing.T, h http.Handler, tok string, hdr map[string]string) (*http.Response, string, *http.Cookie) {
	t.Helper()
	if hdr == nil {
		hdr = map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}
	}
	res, body := do(t, h, "POST", "/status/login", url.Values{"token": {tok}}, hdr)
	for _, c := range res.Cookies() {
		if c.Name == cookieName {
			return res, body, c
		}
	}
	return res, body, nil
}

func TestStatusPageRedirectsToSignInAndRefusesAWrongToken(t *testing.T) {
	h := Handler(&fakeProxy{})
	for _, path := range []string{"/status", "/"} {
		res, _ := do(t, h, "GET", path, nil, nil)
		if res.StatusCode != http.StatusSeeOther {
			t.Errorf("GET %s signed out: %d, want 303", path, res.StatusCode)
		}
	}
	if res, _ := do(t, h, "GET", "/status", nil, nil); res.Header.Get("Location") != "/status/login" {
		t.Errorf("GET /status signed out goes to %q, want /status/login", res.Header.Get("Location"))
	}
	res, body := do(t, h, "GET", "/status/login", nil, nil)
	if res.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `method="post"`) {
		t.Errorf("sign-in form: %d %q", res.StatusCode, body)
	}
	res, body, c := signIn(t, h, "wrong", nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not the cluster&#39;s API token") || c != nil {
		t.Errorf("wrong token: %d cookie %v %q", res.StatusCode, c, body)
	}
	if strings.Contains(body, "wrong") {
		t.Errorf("the sign-in page echoes the token sent: %q", body)
	}
	res, _, c = signIn(t, h, "", nil)
	if res.StatusCode != http.StatusUnauthorized || c != nil {
		t.Errorf("empty token: %d cookie %v", res.StatusCode, c)
	}
}

func TestSignInCookieOpensThePageAndItsAPI(t *testing.T) {
	f := &fakeProxy{}
	h := Handler(f)
	// A token pasted from its file ends with a newline.
	res, _, c := signIn(t, h, "s3cret\n", nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/status" || c == nil {
		t.Fatalf("sign-in: %d to %q, cookie %v", res.StatusCode, res.Header.Get("Location"), c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Errorf("cookie over plain HTTP: %+v, want HttpOnly, SameSite=Strict, not Secure, Path=/", c)
	}
	if strings.Contains(c.Value, "s3cret") {
		t.Errorf("the cookie holds the token: %q", c.Value)
	}
	cookie := map[string]string{"Cookie": c.String()}
	res, body := do(t, h, "GET", "/status", nil, cookie)
	if res.StatusCode != 200 || !strings.Contains(body, `src="/status/app.js"`) {
		t.Errorf("page signed in: %d %q", res.StatusCode, body)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("page header %s = %q, want %q", k, got, want)
		}
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("page CSP %q", csp)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
		t.Errorf("the page has inline script or style, which its CSP forbids")
	}
	res, body = do(t, h, "GET", "/api/v1/overview", nil, cookie)
	var ov model.Overview
	if res.StatusCode != 200 || json.Unmarshal([]byte(body), &ov) != nil {
		t.Fatalf("overview signed in: %d %q", res.StatusCode, body)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("overview Cache-Control %q", res.Header.Get("Cache-Control"))
	}
	if ov.Proxy != "p1" || ov.Region != "eu" || len(ov.Members) != 1 || len(ov.Resources) != 1 || ov.Resources[0].Name != "db" ||
		len(ov.Sessions) != 1 || ov.Sessions[0].Path != "p1>a1" || len(ov.Failovers) != 1 || ov.Failovers[0].From != "p1>a0" {
		t.Errorf("overview: %+v", ov)
	}
	// The bearer token works as well, and a wrong one is not saved by a
	// good cookie beside it.
	if res, _ := do(t, h, "GET", "/api/v1/overview", nil, map[string]string{"Authorization": "Bearer s3cret"}); res.StatusCode != 200 {
		t.Errorf("overview with the bearer token: %d", res.StatusCode)
	}
	if res, _ := do(t, h, "GET", "/api/v1/overview", nil, map[string]string{"Authorization": "Bearer nope", "Cookie": c.String()}); res.StatusCode != 401 {
		t.Errorf("overview with a wrong bearer token and a good cookie: %d, want 401", res.StatusCode)
	}

	// Behind a proxy that terminates HTTPS, the cookie is Secure.
	if _, _, c := signIn(t, h, "s3cret", map[string]string{"X-Forwarded-Proto": "https"}); c == nil || !c.Secure {
		t.Errorf("cookie over HTTPS: %+v, want Secure", c)
	}

	// Sign-out clears the cookie.
	res, _ = do(t, h, "POST", "/status/logout", url.Values{}, map[string]string{"Origin": "http://example.com", "Cookie": c.String()})
	var cleared bool
	for _, k := range res.Cookies() {
		cleared = cleared || k.Name == cookieName && k.MaxAge < 0 && k.Value == ""
	}
	if res.StatusCode != http.StatusSeeOther || !cleared {
		t.Errorf("sign-out: %d, cookies %v", res.StatusCode, res.Cookies())
	}

	// Replacing the token signs everyone out.
	f.token = "n3w"
	if res, _ := do(t, h, "GET", "/api/v1/overview", nil, cookie); res.StatusCode != 401 {
		t.Errorf("overview with a cookie of the old token: %d, want 401", res.StatusCode)
	}
}

func TestForgedExpiredAndCrossSiteSignInsAreRefused(t *testing.T) {
	p := &fakeProxy{}
	now := time.Unix(1_800_000_000, 0)
	g := guard{p: p, now: func() time.Time { return now }}
	v, _, err := g.cookie()
	if err != nil {
		t.Fatal(err)
	}
	if !g.validCookie(v) {
		t.Fatalf("a fresh cookie %q is refused", v)
	}
	parts := strings.Split(v, ".")
	later := time.Unix(1_900_000_000, 0).Unix()
	for name, bad := range map[string]string{
		"empty":          "",
		"no version":     strings.TrimPrefix(v, "v1."),
		"longer expiry":  parts[0] + "." + itoa(later) + "." + parts[2],
		"flipped mac":    parts[0] + "." + parts[1] + "." + strings.ToUpper(parts[2]),
		"no mac":         parts[0] + "." + parts[1] + ".",
		"raw token":      "s3cret",
		"token as mac":   parts[0] + "." + parts[1] + ".s3cret",
		"garbage expiry": parts[0] + ".x." + parts[2],
		"trailing junk":  v + ".x",
		"far future, own": func() string {
			g2 := g
			g2.now = func() time.Time { return now.Add(48 * time.Hour) }
			v, _, _ := g2.cookie()
			return v
		}(),
	} {
		if g.validCookie(bad) {
			t.Errorf("%s cookie %q accepted", name, bad)
		}
	}
	now = now.Add(signInFor + time.Second)
	if g.validCookie(v) {
		t.Errorf("a cookie past its %s is accepted", signInFor)
	}

	// Another site's page posting the form gets no cookie.
	h := Handler(p)
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
	} {
		res, body, c := signIn(t, h, "s3cret", hdr)
		if res.StatusCode != http.StatusForbidden || c != nil || !strings.Contains(body, "cross-origin") {
			t.Errorf("sign-in with %v: %d cookie %v %q, want 403", hdr, res.StatusCode, c, body)
		}
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestOverviewCountsEachAgentsResourcesOnce: an agent with tunnels on two
// proxies is listed through each, and serves each of its names once.
func TestOverviewCountsEachAgentsResourcesOnce(t *testing.T) {
	ep := func(name, proxy string) router.Endpoint {
		return router.Endpoint{Resource: model.Resource{Name: name, Kind: model.KindSSH, AgentID: "a1", ProxyID: proxy, Healthy: true}, Online: true}
	}
	snap := &router.Snapshot{
		Resources: map[string][]router.Endpoint{"n1": {ep("n1", "p1"), ep("n1", "p2")}, "n2": {ep("n2", "p1"), ep("n2", "p2")}},
		Routes: []router.AgentRoute{
			{Agent: model.Agent{ID: "a1", ProxyID: "p1"}, Online: true, Local: true},
			{Agent: model.Agent{ID: "a1", ProxyID: "p2"}, Online: true},
		},
	}
	ov := overview(snapProxy{fakeProxy: &fakeProxy{}, snap: snap}, time.Now())
	if len(ov.Agents) != 2 || ov.Agents[0].Resources != 2 || ov.Agents[1].Resources != 2 || !ov.Agents[0].Local {
		t.Errorf("agents: %+v, want a1 through p1 and p2, 2 resources each", ov.Agents)
	}
	if len(ov.Resources) != 2 || ov.Resources[0].Agents != 1 {
		t.Errorf("resources: %+v", ov.Resources)
	}
}

type snapProxy struct {
	*fakeProxy
	snap *router.Snapshot
}

func (s snapProxy) Snapshot() *router.Snapshot { return s.snap }
