package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/storage/recordings"
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Session recordings on the agent.
//
// Every PTY session on the embedded SSH server is recorded (nodessh
// Config.Record) as asciicast v2 into the spool (storage/recordings),
// under the session's id (the audit log's), "<id>-N" for the N-th session
// channel of one connection: output as the terminal showed it, resizes,
// and what the user typed when a role asks (record_input). A recording
// stops at recording.max_bytes with a marker saying so; a resumable
// session whose path broke and came back gets a marker where it resumed.
//
// The spool is written first, and uploaded after the session's end, on
// a goroutine of its own (uploader): to every proxy the agent holds a
// tunnel to, each with the ticket the dialing proxy signed, until
// recording.replicas proxies hold it (or as many as the cluster had at
// most since the agent started);
// then it leaves the spool. A failed upload is retried with backoff
// (recording.retry_min doubling to retry_max), at once when a tunnel
// comes up, and after a restart: a proxy outage never touches a session,
// and loses no recording once a proxy returns.
//
// Failures at the node: a role with require_recording ends the session
// (and refuses it before it starts) when its recording cannot be written
// (spool full, disk error) or reaches its cap, with a sentence on the
// user's terminal; without it the session goes on unrecorded from there,
// logged and counted (RecordingFailures).

// RecordingConfig is the recording section of agent.yaml.
type RecordingConfig struct {
	// SpoolDir holds recordings until the proxies have them (default
	// <data_dir>/recordings).
	SpoolDir string `yaml:"spool_dir"`
	// MaxBytes caps one recording (default 64 MiB); past it a marker
	// says the recording stopped. Keep it under the proxies'
	// recordings.max_bytes.
	MaxBytes int64 `yaml:"max_bytes"`
	// SpoolMaxBytes caps the spool (default 1 GiB): recordings that do
	// not fit stop (or end their session, with require_recording).
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// Replicas is how many proxies the agent uploads a recording to
	// before it leaves the spool (default 2; at most connection_count in
	// peering mode, and the cluster's proxies). Each proxy that takes an
	// upload also copies it to a peer.
	Replicas int `yaml:"replicas"`
	// RetryMin and RetryMax bound the backoff between upload attempts
	// (default 1s and 1m).
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
}

func (c *RecordingConfig) checkAndSetDefaults(dataDir string, errs *conf.Errors) {
	if c.SpoolDir == "" && dataDir != "" {
		c.SpoolDir = filepath.Join(dataDir, "recordings")
	}
	switch {
	case c.MaxBytes == 0:
		c.MaxBytes = recordings.DefaultMaxBytes
	case c.MaxBytes < 64<<10:
		errs.Addf("recording.max_bytes", "%d is less than 64 KiB", c.MaxBytes)
	}
	switch {
	case c.SpoolMaxBytes == 0:
		c.SpoolMaxBytes = 1 << 30
	case c.SpoolMaxBytes < 64<<10:
		// Less than max_bytes is allowed (the spool then stops a
		// recording first), not less than a few screens.
		errs.Addf("recording.spool_max_bytes", "%d is less than 64 KiB", c.SpoolMaxBytes)
	}
	switch {
	case c.Replicas == 0:
		c.Replicas = 2
	case c.Replicas < 1 || c.Replicas > 16:
		errs.Addf("recording.replicas", "%d is outside 1 to 16", c.Replicas)
	}
	if c.RetryMin == 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
	if c.RetryMin < 10*time.Millisecond || c.RetryMax < c.RetryMin || c.RetryMax > time.Hour {
		errs.Addf("recording.retry_min", "retry_min %s and retry_max %s must satisfy 10ms <= retry_min <= retry_max <= 1h", c.RetryMin, c.RetryMax)
	}
}

// recorder is one PTY session's recording: a nodessh.Recorder writing
// asciicast into a spool file. Its methods come from the session's copier
// goroutines and its request loop: mu serializes them.
type recorder struct {
	a        *Agent
	id       string
	session  string
	log      *slog.Logger
	start    time.Time
	input    bool   // record what the user types
	required string // the role that requires the recording; "" if none

	mu     sync.Mutex // guards the fields below
	w      *asciicast.Writer
	f      *recordings.SpoolFile
	failed error // the recording broke; nothing more is written
	capped bool  // the cap's end was told
	closed bool  // Close was called
}

// record is the embedded SSH server's Record hook.
func (a *Agent) record(conn net.Conn, info nodessh.RecordInfo) (nodessh.Recorder, error) {
	sc, ok := conn.(*sessionConn)
	if !ok || a.spool == nil || sc.sessionID == "" {
		return nil, nil
	}
	pol, _, ident, err := a.decisionInputs(conn, info.Cert)
	if err != nil {
		return nil, fmt.Errorf("access denied: %w", err)
	}
	opts := pol.Recording(ident)
	refuse := func(why error) (nodessh.Recorder, error) {
		a.recFailures.Add(1)
		if opts.Required {
			return nil, fmt.Errorf("this session must be recorded (role %s), and the node cannot record it: %v", opts.RequiredBy, why)
		}
		a.log.Warn("session not recorded", "session", sc.sessionID, "err", why)
		return nil, nil
	}
	if sc.ticket == "" {
		return refuse(errors.New("the proxy that dialed it signed no recording ticket (it runs an older version)"))
	}
	id := sc.sessionID
	if info.Channel > 1 {
		id = fmt.Sprintf("%s-%d", sc.sessionID, info.Channel)
	}
	now := a.cfg.Clock()
	f, err := a.spool.Create(recordings.SpoolMeta{ID: id, Ticket: sc.ticket, Login: info.Login, Started: now})
	if err != nil {
		return refuse(err)
	}
	user, _ := pki.UserFromCert(info.Cert)
	h := asciicast.Header{
		Width: info.Cols, Height: info.Rows, Timestamp: now.Unix(),
		Title:   user + "@" + sc.resource,
		Command: info.Command,
		Env:     map[string]string{"TERM": info.Term, "SHELL": info.Shell},
	}
	w, err := asciicast.NewWriter(f, h, asciicast.Options{MaxBytes: a.cfg.Recording.MaxBytes})
	if err != nil {
		_ = f.Commit()
		return refuse(err)
	}
	r := &recorder{a: a, id: id, session: sc.sessionID, log: a.log.With("recording", id), start: now, input: opts.Input, required: opts.RequiredBy, w: w, f: f}
	a.recording.add(r)
	return r, nil
}

// liveRecordings are the recordings being written, by session, so that a
// resumed session's recordings get a marker.
type liveRecordings struct {
	mu sync.Mutex // guards m
	m  map[string][]*recorder
}

func (l *liveRecordings) add(r *recorder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]*recorder{}
	}
	l.m[r.session] = append(l.m[r.session], r)
}

func (l *liveRecordings) remove(r *recorder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := slices.DeleteFunc(l.m[r.session], func(x *recorder) bool { return x == r })
	if len(rs) == 0 {
		delete(l.m, r.session)
	} else {
		l.m[r.session] = rs
	}
}

// mark writes a marker into every recording of session.
func (l *liveRecordings) mark(session, note string) {
	l.mu.Lock()
	rs := slices.Clone(l.m[session])
	l.mu.Unlock()
	for _, r := range rs {
		r.mark(note)
	}
}

// resumeMarker marks where a session's path to its user broke and came
// back: the output is all there (resumption replays it), but the user saw
// it later than it was written.
const resumeMarker = "the path to the user broke here and was resumed on a new hop; the user saw the output from here after the pause"

func (r *recorder) elapsed() time.Duration { return r.a.cfg.Clock().Sub(r.start) }

// wrote handles the outcome of one write: a recording that breaks stops;
// one that is required ends the session.
func (r *recorder) wrote(err error) error {
	if err == nil && r.w.Truncated() && !r.capped {
		r.capped = true
		r.log.Info("recording reached its cap", "max_bytes", r.a.cfg.Recording.MaxBytes)
		if r.required != "" {
			return fmt.Errorf("the session ends: its recording reached its cap of %d bytes (recording.max_bytes), and role %s requires recording", r.a.cfg.Recording.MaxBytes, r.required)
		}
	}
	if err == nil {
		return nil
	}
	if r.failed == nil {
		r.failed = err
		r.a.recFailures.Add(1)
		r.log.Warn("recording failed; the session is no longer recorded", "err", err, "required", r.required != "")
	}
	if r.required != "" {
		return fmt.Errorf("the session ends: role %s requires recording, and the node cannot write it: %v", r.required, r.failed)
	}
	return nil
}

func (r *recorder) Output(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.wrote(r.failed)
	}
	return r.wrote(r.w.Output(r.elapsed(), p))
}

func (r *recorder) Input(p []byte) error {
	if !r.input {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.wrote(r.failed)
	}
	return r.wrote(r.w.Input(r.elapsed(), p))
}

func (r *recorder) Resize(cols, rows int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.wrote(r.failed)
	}
	return r.wrote(r.w.Resize(r.elapsed(), cols, rows))
}

// mark writes a marker, unless the recording stopped.
func (r *recorder) mark(note string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil && !r.closed {
		_ = r.wrote(r.w.Mark(r.elapsed(), note))
	}
}

// Close ends the recording: what it holds is fsync'd and handed to the
// uploader, even when it broke part way (its events up to there are
// whole: a write the spool refuses writes nothing).
func (r *recorder) Close() error {
	r.a.recording.remove(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.failed == nil {
		_ = r.w.Flush(r.elapsed())
	} else {
		note := asciicast.StopMarker + "the node could not write it: " + r.failed.Error()
		if err := r.f.Seal(asciicast.AppendEvent(nil, r.elapsed(), asciicast.Marker, note)); err != nil {
			r.log.Warn("close a failed recording", "err", err)
		}
	}
	err := r.f.Commit()
	r.a.uploads.wake()
	return err
}

// RecordingFailures counts recordings that could not start or broke at
// this node; RecordingUploadFailures the uploads that failed (for
// warren_recording_upload_failures_total).
func (a *Agent) RecordingFailures() uint64 { return a.recFailures.Load() }

// RecordingSpoolBytes is the size of the recording spool (recordings not
// yet held by enough proxies), 0 without one.
func (a *Agent) RecordingSpoolBytes() int64 {
	if a.spool == nil {
		return 0
	}
	return a.spool.Used()
}

// RecordingUploadFailures counts failed upload attempts.
func (a *Agent) RecordingUploadFailures() uint64 {
	if a.uploads == nil {
		return 0
	}
	return a.uploads.failures.Load()
}

// uploader ships spooled recordings to the proxies.
type uploader struct {
	a        *Agent
	spool    *recordings.Spool
	kick     chan struct{}
	failures atomic.Uint64
	// mostProxies is the most proxies the agent has known at once.
	mostProxies atomic.Int64

	mu      sync.Mutex // guards the fields below
	tunnels map[*revtunnel.ClientConn]struct{}
	lastErr map[string]string // per recording and proxy, so a repeated failure is logged once
}

func newUploader(a *Agent, spool *recordings.Spool) *uploader {
	return &uploader{a: a, spool: spool, kick: make(chan struct{}, 1),
		tunnels: map[*revtunnel.ClientConn]struct{}{}, lastErr: map[string]string{}}
}

// wake makes the uploader look at the spool now.
func (u *uploader) wake() {
	if u == nil {
		return
	}
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// tunnelUp and tunnelDown keep the tunnels the uploader may use.
func (u *uploader) tunnelUp(t *revtunnel.ClientConn) {
	if u == nil {
		return
	}
	u.mu.Lock()
	u.tunnels[t] = struct{}{}
	u.mu.Unlock()
	u.wake()
}

func (u *uploader) tunnelDown(t *revtunnel.ClientConn) {
	if u == nil {
		return
	}
	u.mu.Lock()
	delete(u.tunnels, t)
	u.mu.Unlock()
}

// live returns one tunnel per proxy.
func (u *uploader) live() []*revtunnel.ClientConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := map[string]bool{}
	var out []*revtunnel.ClientConn
	for t := range u.tunnels {
		if !seen[t.ProxyID] {
			seen[t.ProxyID] = true
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *revtunnel.ClientConn) int {
		if a.ProxyID < b.ProxyID {
			return -1
		}
		return 1
	})
	return out
}

// replicas is how many proxies the agent itself must give a recording
// to: the configured number, but no more than the tunnels it keeps
// (connection_count in peering mode: an agent with one tunnel gives one
// copy, and the proxy that takes it copies it to a peer) nor than the
// cluster's proxies. The cluster's size is the most proxies the agent has
// known since it started: a proxy that is down drops out of the proxy
// set, and must not make the agent settle for fewer copies while it is
// away.
func (u *uploader) replicas() int {
	n := int64(len(u.a.dir.known()))
	for {
		seen := u.mostProxies.Load()
		if n <= seen || u.mostProxies.CompareAndSwap(seen, n) {
			break
		}
	}
	want := min(int64(u.a.cfg.Recording.Replicas), max(u.mostProxies.Load(), 1))
	if u.a.cfg.TunnelStrategy == StrategyPeering {
		want = min(want, int64(u.a.cfg.ConnectionCount))
	}
	return int(want)
}

// run uploads until ctx ends: a pass at every wake, after a failure
// with backoff, and every RetryMax anyway.
func (u *uploader) run(ctx context.Context) {
	cfg := u.a.cfg.Recording
	wait := cfg.RetryMin
	for {
		next := cfg.RetryMax
		if u.pass(ctx) {
			next = wait
			wait = min(wait*2, cfg.RetryMax)
		} else {
			wait = cfg.RetryMin
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-u.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// pass tries every pending recording once; it reports whether one is
// still short of its replicas.
func (u *uploader) pass(ctx context.Context) (short bool) {
	pending, err := u.spool.Pending()
	if err != nil {
		u.a.log.Warn("read recording spool", "err", err)
		return true
	}
	tunnels := u.live()
	want := u.replicas()
	for _, m := range pending {
		for _, t := range tunnels {
			if len(m.Uploaded) >= want || slices.Contains(m.Uploaded, t.ProxyID) || ctx.Err() != nil {
				continue
			}
			if err := u.upload(ctx, t, m); err != nil {
				u.failures.Add(1)
				u.logFailure(m.ID, t.ProxyID, err)
				continue
			}
			marked, err := u.spool.MarkUploaded(m.ID, t.ProxyID)
			if err != nil {
				// Uploaded again later: the proxy takes the same bytes twice.
				u.a.log.Warn("note a recording's upload", "recording", m.ID, "err", err)
				continue
			}
			m = marked
			u.a.log.Info("recording uploaded", "recording", m.ID, "proxy", t.ProxyID, "replicas", len(m.Uploaded))
		}
		if len(m.Uploaded) < want {
			short = true
			continue
		}
		if err := u.spool.Remove(m.ID); err != nil {
			u.a.log.Warn("remove an uploaded recording from the spool", "recording", m.ID, "err", err)
		}
		u.mu.Lock()
		for k := range u.lastErr {
			if len(k) > len(m.ID) && k[:len(m.ID)+1] == m.ID+" " {
				delete(u.lastErr, k)
			}
		}
		u.mu.Unlock()
	}
	return short
}

func (u *uploader) logFailure(id, proxy string, err error) {
	key, text := id+" "+proxy, err.Error()
	u.mu.Lock()
	same := u.lastErr[key] == text
	u.lastErr[key] = text
	u.mu.Unlock()
	if !same {
		u.a.log.Warn("recording upload failed; will retry", "recording", id, "proxy", proxy, "err", err)
	}
}

// upload sends one recording over t.
func (u *uploader) upload(ctx context.Context, t *revtunnel.ClientConn, m recordings.SpoolMeta) error {
	f, err := u.spool.Open(m.ID)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("read spooled recording: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// A minute, and a second more per MiB: a slow link still finishes.
	uctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(size>>20)*time.Second)
	defer cancel()
	offer := revtunnel.RecordingOffer{ID: m.ID, Ticket: m.Ticket, Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), Login: m.Login}
	return t.UploadRecording(uctx, offer, f)
}
