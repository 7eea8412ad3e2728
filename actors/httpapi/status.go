package httpapi

// The status page: GET /status, a page of plain HTML, CSS and JavaScript
// embedded in the binary (status/), which reads GET /api/v1/overview every
// few seconds and draws the cluster as this proxy sees it.
//
// Sign-in: the page and its API take the API token in the Authorization
// header, or a cookie that POST /status/login sets when it is sent the
// token from its form. The cookie holds an expiry and an HMAC of it keyed
// by the token (pki's APITokenMAC), never the token: every proxy of the
// cluster accepts it, and replacing the token signs everyone out. It is
// HttpOnly, SameSite=Strict, Secure when the page was reached over HTTPS,
// and lasts signInFor. The sign-in and sign-out posts are refused from
// other origins (net/http's CrossOriginProtection: Sec-Fetch-Site and
// Origin), so another site can neither sign a browser in nor out.
//
// Every answer forbids framing and caching, and the page's
// Content-Security-Policy lets it run only its own script file: the page
// writes what it gets from the network (names, labels, health details
// agents report) as text, never as HTML.

import (
	"crypto/hmac"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

//go:embed status
var statusFiles embed.FS

var (
	assets    = mustSub(statusFiles, "status")
	loginPage = template.Must(template.ParseFS(assets, "login.html"))
)

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

const (
	// cookieName is the status page's sign-in cookie.
	cookieName = "warren_status"
	// signInFor is how long a sign-in lasts.
	signInFor = 12 * time.Hour
	// cookieMAC prefixes what the cookie's MAC covers, so that no other
	// use of APITokenMAC yields a valid cookie.
	cookieMAC = "status-cookie|"
	// maxLoginForm bounds a sign-in post.
	maxLoginForm = 4 << 10
)

// contentSecurity lets a page load only its own files, post forms only to
// its proxy, and be framed by no one.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// wrongToken is what a sign-in with a wrong token is told.
const wrongToken = "That is not the cluster's API token. Paste the contents of the api_token file in the cluster's auth directory (the same token `warren` and the HTTP API take)."

// guard decides whether a request carries the API token: in the
// Authorization header, or as the status page's sign-in cookie.
type guard struct {
	p   Proxy
	now func() time.Time
}

// ok reports whether r may read the API. A request that sends a bearer
// token is judged by it alone.
func (g guard) ok(r *http.Request) bool {
	if tok, ok := bearer(r); ok {
		return g.p.CheckAPIToken(tok)
	}
	c, err := r.Cookie(cookieName)
	return err == nil && g.validCookie(c.Value)
}

// cookie is a new sign-in cookie's value: its expiry in Unix seconds and
// the MAC of it, "v1.<expiry>.<mac>".
func (g guard) cookie() (value string, expires time.Time, err error) {
	expires = g.now().Add(signInFor)
	exp := strconv.FormatInt(expires.Unix(), 10)
	mac, err := g.p.APITokenMAC([]byte(cookieMAC + exp))
	if err != nil {
		return "", time.Time{}, err
	}
	return "v1." + exp + "." + base64.RawURLEncoding.EncodeToString(mac), expires, nil
}

func (g guard) validCookie(v string) bool {
	rest, ok := strings.CutPrefix(v, "v1.")
	if !ok {
		return false
	}
	exp, sum, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	now := g.now()
	if err != nil || !now.Before(time.Unix(sec, 0)) || time.Unix(sec, 0).After(now.Add(signInFor+time.Minute)) {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sum)
	if err != nil {
		return false
	}
	want, err := g.p.APITokenMAC([]byte(cookieMAC + exp))
	return err == nil && hmac.Equal(got, want)
}

// statusPage adds the status page, its sign-in and its API to mux.
func statusPage(mux *http.ServeMux, g guard, auth func(http.HandlerFunc) http.Handler) {
	page := func(h http.HandlerFunc) http.Handler { return secured(h) }
	mux.Handle("GET /{$}", page(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status", http.StatusSeeOther)
	}))
	mux.Handle("GET /status", page(func(w http.ResponseWriter, r *http.Request) {
		if !g.ok(r) {
			http.Redirect(w, r, "/status/login", http.StatusSeeOther)
			return
		}
		serveAsset(w, r, "index.html")
	}))
	for _, name := range []string{"app.js", "style.css"} {
		// No data in them: open, so the sign-in form has its style.
		mux.Handle("GET /status/"+name, page(func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, name) }))
	}
	mux.Handle("GET /status/login", page(func(w http.ResponseWriter, r *http.Request) {
		showLogin(w, http.StatusOK, "")
	}))
	// The posts change the browser's sign-in: another site's page must not
	// make them.
	posts := http.NewCrossOriginProtection()
	posts.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cross-origin request refused: sign in from the proxy's own status page", http.StatusForbidden)
	}))
	mux.Handle("POST /status/login", page(posts.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
		if err := r.ParseForm(); err != nil {
			showLogin(w, http.StatusBadRequest, "The sign-in form could not be read; send it again from the page.")
			return
		}
		// A token pasted from its file may end with a newline.
		tok := strings.TrimSpace(r.PostForm.Get("token"))
		if tok == "" || !g.p.CheckAPIToken(tok) {
			showLogin(w, http.StatusUnauthorized, wrongToken)
			return
		}
		v, expires, err := g.cookie()
		if err != nil {
			showLogin(w, http.StatusInternalServerError, "The proxy cannot read its API token file; see its log.")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: cookieName, Value: v, Path: "/", Expires: expires, MaxAge: int(signInFor / time.Second),
			HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode,
		})
		http.Redirect(w, r, "/status", http.StatusSeeOther)
	})).ServeHTTP))
	mux.Handle("POST /status/logout", page(posts.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{
			Name: cookieName, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode,
		})
		http.Redirect(w, r, "/status/login", http.StatusSeeOther)
	})).ServeHTTP))
	mux.Handle("GET /api/v1/overview", auth(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(overview(g.p, g.now()))
	}))
}

// overHTTPS reports whether the browser reached the page over HTTPS: on
// this port, or through a proxy in front that says so. A forged header
// only withholds the cookie from its own sender.
func overHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// secured sets the headers every status page answer carries.
func secured(next http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	}
}

func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	http.ServeFileFS(w, r, assets, name)
}

func showLogin(w http.ResponseWriter, code int, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = loginPage.Execute(w, struct{ Problem string }{problem})
}

// overview is everything the status page shows.
func overview(p Proxy, now time.Time) model.Overview {
	snap := p.Snapshot()
	// An agent's resource is listed once per proxy that holds one of its
	// tunnels: count names.
	served := map[string]map[string]bool{}
	for name, eps := range snap.Resources {
		for _, e := range eps {
			if served[e.AgentID] == nil {
				served[e.AgentID] = map[string]bool{}
			}
			served[e.AgentID][name] = true
		}
	}
	agents := make([]model.AgentLine, 0, len(snap.Routes))
	for _, r := range snap.Routes {
		agents = append(agents, model.AgentLine{
			ID: r.ID, Hostname: r.Hostname, Version: r.Version, ProxyID: r.ProxyID,
			Online: r.Online, Local: r.Local, Connected: r.Connected, LastSeen: r.LastSeen,
			Resources: len(served[r.ID]),
		})
	}
	sort.SliceStable(agents, func(i, j int) bool { return agents[i].ID < agents[j].ID })
	return model.Overview{
		Proxy: p.ID(), Region: p.Region(), Time: now,
		Members: p.Status(), Agents: agents, Resources: snap.List(),
		Sessions: p.Sessions(), Failovers: p.Failovers(),
	}
}
