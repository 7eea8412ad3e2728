package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/warren-proxy/warren/internal/model"
)

// httpHandler serves /healthz and /readyz (open, for load balancers and
// GeoDNS checks), and the JSON API and Go profiles under /debug/pprof/
// (bearer token from the cluster's api_token file).
func (p *Proxy) httpHandler() http.Handler {
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
	// Every resource, or with ?name=A&name=B only those: a client that
	// watches a few names among thousands need not fetch them all.
	mux.Handle("GET /api/v1/resources", p.requireToken(func(w http.ResponseWriter, r *http.Request) {
		var list []model.Summary
		if names := r.URL.Query()["name"]; len(names) > 0 {
			list = p.table.Snapshot().Summaries(names)
		} else {
			list = p.table.Snapshot().List()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"proxy":     p.cfg.ID,
			"resources": list,
		})
	}))
	mux.Handle("GET /api/v1/status", p.requireToken(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Status())
	}))
	// Profiles for operators (`go tool pprof -http=: URL` with the same
	// bearer token): what a proxy spends its CPU and memory on.
	mux.Handle("GET /debug/pprof/", p.requireToken(pprof.Index))
	mux.Handle("GET /debug/pprof/profile", p.requireToken(pprof.Profile))
	mux.Handle("GET /debug/pprof/trace", p.requireToken(pprof.Trace))
	return mux
}

func (p *Proxy) requireToken(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !p.auth.CheckAPIToken(tok) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
			http.Error(w, "missing or wrong API token: send Authorization: Bearer <contents of the cluster's api_token file>", http.StatusUnauthorized)
			return
		}
		next(w, r)
	})
}
