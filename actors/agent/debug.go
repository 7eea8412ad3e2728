package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/warren-proxy/warren/actors/httpapi"
	"github.com/warren-proxy/warren/transport/pki"
)

// startDebug serves Go's profiles and the agent's Prometheus metrics
// (metrics.go) on debug_listen, if set, behind the token in
// debug_token_file (the metrics without it if metrics_open): how an
// operator (or `warren bench path --profiles`) sees what an agent does and
// spends its CPU on, as a proxy's HTTP port shows its own. The token is
// read once, at start.
func (a *Agent) startDebug() error {
	if a.cfg.DebugListen == "" {
		return nil
	}
	tok, err := readTokenFile("debug_token_file", a.cfg.DebugTokenFile, "any secret of 16 characters or more, e.g. from `openssl rand -hex 32`")
	if err != nil {
		return err
	}
	if len(tok) < 16 {
		return fmt.Errorf("debug_token_file %s holds a token of %d characters; use 16 or more (e.g. `openssl rand -hex 32`)", a.cfg.DebugTokenFile, len(tok))
	}
	check := func(got string) bool { return pki.MatchToken(got, tok) }
	ln, err := net.Listen("tcp", a.cfg.DebugListen)
	if err != nil {
		return fmt.Errorf("debug_listen: %w", err)
	}
	// Bounded as the proxy's HTTP port is: headers in 10 s, a request in
	// 30 s, idle connections closed after a minute (profiles stream for
	// their own duration, so writes are not bounded).
	const hint = "missing or wrong token: send Authorization: Bearer <contents of the agent's debug_token_file>"
	mux := http.NewServeMux()
	mux.Handle("GET /debug/pprof/", httpapi.Profiles(check, hint))
	if a.cfg.MetricsOpen {
		mux.Handle("GET /metrics", a.metrics.handler())
	} else {
		mux.Handle("GET /metrics", httpapi.RequireToken(check, hint, a.metrics.handler().ServeHTTP))
	}
	a.debugSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	a.debugAddr = ln.Addr()
	a.wg.Go(func() {
		if err := a.debugSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("debug listener stopped", "err", err)
		}
	})
	a.log.Info("serving profiles", "debug_listen", a.debugAddr.String())
	return nil
}

// DebugAddr is the address the profiles are served on, or nil.
func (a *Agent) DebugAddr() net.Addr { return a.debugAddr }
