// Package httpapi serves a proxy's HTTP port: /healthz and /readyz, open
// for load balancers and orchestrators; and, behind the cluster's API token
// (Authorization: Bearer <auth_dir/api_token>), the JSON API that `warren
// ls`, `warren status` and the benchmarks read, the Prometheus metrics at
// /metrics (open if the proxy's http.metrics_open says so), and Go's
// profiles under /debug/pprof/; and the status page (status.go), which an
// operator signs in to with the same token.
package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

// Proxy is what the HTTP API needs of its proxy.
type Proxy interface {
	ID() string
	Region() string
	// NotReady says why the proxy should not take users now, or "".
	NotReady() string
	Snapshot() *router.Snapshot
	Status() model.Statuses
	// Sessions are the sessions running through the proxy; Failovers the
	// latest sessions that moved, newest first.
	Sessions() []model.LiveSession
	Failovers() []model.Failover
	// CheckAPIToken reports whether tok is the cluster's API token.
	CheckAPIToken(tok string) bool
	// Metrics serves the proxy's Prometheus metrics; MetricsOpen says
	// whether they are served without the token.
	Metrics() http.Handler
	MetricsOpen() bool
	// APITokenMAC is an HMAC of msg keyed by the API token (pki's
	// Authority.APITokenMAC): the status page's sign-in cookie.
	APITokenMAC(msg []byte) ([]byte, error)
}

// Handler returns the HTTP API of p.
func Handler(p Proxy) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := p.NotReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	// The API takes the token in a header, or the status page's sign-in
	// cookie (status.go); its answers are not cached.
	g := guard{p: p, now: time.Now}
	auth := func(next http.HandlerFunc) http.Handler { return secured(requireToken(g.ok, apiTokenHint, next)) }
	// Every resource, or with ?name=A&name=B only those: a client that
	// watches a few names among thousands need not fetch them all.
	mux.Handle("GET /api/v1/resources", auth(func(w http.ResponseWriter, r *http.Request) {
		var list []model.Summary
		if names := r.URL.Query()["name"]; len(names) > 0 {
			list = p.Snapshot().Summaries(names)
		} else {
			list = p.Snapshot().List()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"proxy":     p.ID(),
			"resources": list,
		})
	}))
	mux.Handle("GET /api/v1/status", auth(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Status())
	}))
	// Prometheus' text format; the metrics name no user or session, but
	// the cluster's shape (peers, regions, counts) is still the operator's
	// business, so the token is required unless http.metrics_open.
	if p.MetricsOpen() {
		mux.Handle("GET /metrics", p.Metrics())
	} else {
		mux.Handle("GET /metrics", auth(p.Metrics().ServeHTTP))
	}
	// Profiles for operators (`go tool pprof -http=: URL` with the same
	// bearer token): what a proxy spends its CPU and memory on.
	mux.Handle("GET /debug/pprof/", profiles(g.ok, apiTokenHint))
	statusPage(mux, g, auth)
	return mux
}

// apiTokenHint is what a request without the proxy's token is told.
const apiTokenHint = "missing or wrong API token: send Authorization: Bearer <contents of the cluster's api_token file>"

// Profiles serves Go's profiles under /debug/pprof/ (the index, every
// named profile, a CPU profile and an execution trace) to requests whose
// bearer token check accepts; others get 401 with hint, which says where
// the token is. A proxy serves them on its HTTP port, an agent on its
// debug_listen.
func Profiles(check func(tok string) bool, hint string) http.Handler {
	return profiles(bearerOK(check), hint)
}

func profiles(ok func(*http.Request) bool, hint string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return requireToken(ok, hint, mux.ServeHTTP)
}

// RequireToken serves next to requests whose bearer token check accepts,
// and answers others 401 with hint, which says where the token is (the
// agent's /metrics on its debug_listen).
func RequireToken(check func(tok string) bool, hint string, next http.HandlerFunc) http.Handler {
	return requireToken(bearerOK(check), hint, next)
}

// bearerOK accepts the requests whose bearer token check accepts.
func bearerOK(check func(tok string) bool) func(*http.Request) bool {
	return func(r *http.Request) bool {
		tok, ok := bearer(r)
		return ok && check(tok)
	}
}

// bearer is the request's bearer token, if it sends one.
func bearer(r *http.Request) (string, bool) {
	return strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// requireToken serves next the requests ok accepts; others get 401 with
// hint.
func requireToken(ok func(*http.Request) bool, hint string, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
			http.Error(w, hint, http.StatusUnauthorized)
			return
		}
		next(w, r)
	})
}
