package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/actors/usercmd"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/cluster/membership"
	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/logsample"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/recordings"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Session recordings on a proxy.
//
// Agents upload each recording to the proxies they hold tunnels to (each
// with the ticket the dialing proxy signed), up to recording.replicas of
// them (2 by default; one for an agent with one tunnel), and keep it in
// their spool until then; every proxy that takes one stores it in
// <data_dir>/recordings and asks one peer (the next live member by id,
// of its region if it can) to copy it (RecordingCopy: the peer reads it
// back in pieces and checks it as an upload). So a recording is held by
// two proxies or more, and survives the loss of one. Any proxy answers
// `recordings ls` for the whole cluster (it asks every live member, as
// audit does) and `recordings get` for any recording a live member
// holds, reading it from a peer when it has none itself.

// RecordingsConfig is the recordings section of proxy.yaml.
type RecordingsConfig struct {
	// MaxBytes bounds one recording an agent uploads (default 65 MiB:
	// the agents' default cap, 64 MiB, and room for a closing marker).
	MaxBytes int64 `yaml:"max_bytes"`
	// Retention, if set, deletes the recordings this proxy stored longer
	// ago than this, checked at start and every hour (default 0: kept
	// until deleted by hand; watch data_dir/recordings).
	Retention time.Duration `yaml:"retention"`
}

func (c *RecordingsConfig) checkAndSetDefaults(errs *conf.Errors) {
	switch {
	case c.MaxBytes == 0:
		c.MaxBytes = recordings.DefaultMaxBytes + recordings.StoreSlack
	case c.MaxBytes < 64<<10 || c.MaxBytes > 16<<30:
		errs.Addf("recordings.max_bytes", "%d is outside 64 KiB to 16 GiB", c.MaxBytes)
	}
	if c.Retention != 0 && (c.Retention < time.Minute || c.Retention > 100*365*24*time.Hour) {
		errs.Addf("recordings.retention", "%s is outside 1m to 100 years (0 keeps recordings until deleted by hand)", c.Retention)
	}
}

// expireRecordings deletes the recordings older than recordings.retention
// now and every hour, until ctx ends.
func (p *Proxy) expireRecordings(ctx context.Context, every time.Duration) {
	if p.cfg.Recordings.Retention <= 0 || p.rec.store == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, bytes, err := p.rec.store.Expire(p.cfg.Clock().Add(-p.cfg.Recordings.Retention))
		switch {
		case err != nil:
			p.log.Error("expire recordings", "err", err)
		case n > 0:
			p.log.Info("recordings expired", "count", n, "bytes", bytes, "retention", p.cfg.Recordings.Retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RecordingsName is the actor name of every proxy's recordings server:
// peers ask it what it stores (RecordingQuery) and for pieces of a
// recording (RecordingRead).
const RecordingsName = "recordings"

// recordingPiece is the most one RecordingRead returns.
const recordingPiece = 1 << 20

// recordingState is the proxy's recording store, its counters and the
// copies it is taking from peers.
type recordingState struct {
	store    *recordings.Store
	failures atomic.Uint64      // uploads refused or failed
	refused  *logsample.Sampler // their log lines: an agent may send many

	copyCtx  context.Context
	copyStop context.CancelFunc
	copies   sync.WaitGroup // goroutines copying a recording from a peer
	copying  atomic.Int32   // how many; more than maxCopies at once are dropped

	mu      sync.Mutex // guards stopped, and copies.Add against copies.Wait
	stopped bool       // the proxy is closing: no more copies
}

// maxCopies bounds the recordings a proxy copies from peers at once.
const maxCopies = 4

// openRecordings opens the store and starts the recordings server.
func (p *Proxy) openRecordings() error {
	st, err := recordings.OpenStore(filepath.Join(p.cfg.DataDir, "recordings"), recordings.StoreOptions{
		MaxBytes: p.cfg.Recordings.MaxBytes, Now: p.cfg.Clock,
	})
	if err != nil {
		return err
	}
	p.rec.store = st
	p.rec.refused = logsample.New(p.log, "recording refused", logsample.Every)
	p.rec.copyCtx, p.rec.copyStop = context.WithCancel(context.Background())
	if _, err := p.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &recordingsServer{p: p} }), RecordingsName); err != nil {
		return fmt.Errorf("spawn the recordings server: %w", err)
	}
	return nil
}

// stopRecordingCopies ends the copies from peers under way and waits for
// them (while the actor system still runs, so that their reads end).
func (p *Proxy) stopRecordingCopies() {
	p.rec.mu.Lock()
	p.rec.stopped = true
	p.rec.mu.Unlock()
	if p.rec.copyStop != nil {
		p.rec.copyStop()
	}
	p.rec.copies.Wait()
}

func (p *Proxy) closeRecordings() error {
	p.stopRecordingCopies()
	if p.rec.store == nil {
		return nil
	}
	p.rec.refused.Stop()
	return p.rec.store.Close()
}

// RecordingUploadFailures counts the recording uploads this proxy refused
// or could not store (for warren_recording_upload_failures_total).
func (p *Proxy) RecordingUploadFailures() uint64 { return p.rec.failures.Load() }

// SignTicket signs a recording ticket with the cluster's proxy host CA,
// which every proxy holds: any of them can check it (tunnel.Tickets).
func (p *Proxy) SignTicket(t revtunnel.RecordingTicket) (string, error) {
	return revtunnel.SignTicket(p.auth.HostCA, t)
}

// MaxRecordingBytes bounds one upload (tunnel.RecordingSink).
func (p *Proxy) MaxRecordingBytes() int64 { return p.cfg.Recordings.MaxBytes }

// StoreRecording takes an upload from agent (as its tunnel authenticated
// it): the ticket must be the cluster's, issued to this agent for the
// recording's session (tunnel.RecordingSink).
func (p *Proxy) StoreRecording(agent string, offer revtunnel.RecordingOffer, r io.Reader) error {
	err := p.storeRecording(agent, offer, r)
	if err != nil {
		p.rec.failures.Add(1)
		// Names were checked by offer.Validate before this point.
		p.rec.refused.Event("agent", agent, "recording", offer.ID, "err", err)
	}
	return err
}

func (p *Proxy) storeRecording(agent string, offer revtunnel.RecordingOffer, r io.Reader) error {
	if p.rec.store == nil {
		return errors.New("this proxy keeps no recordings")
	}
	t, err := revtunnel.VerifyTicket(p.auth.HostCA.PublicKey(), offer.Ticket)
	if err != nil {
		return err
	}
	if t.Agent != agent {
		return fmt.Errorf("recording %s: its ticket was issued to another agent; an agent uploads only the sessions it served", offer.ID)
	}
	if revtunnel.SessionOf(offer.ID) != t.Session {
		return fmt.Errorf("recording %s is not of session %s, which its ticket names", offer.ID, t.Session)
	}
	m, err := p.rec.store.Put(recordings.Meta{
		ID: offer.ID, Session: t.Session, Agent: t.Agent, User: t.User, Resource: t.Resource,
		Login: offer.Login, Size: offer.Size, SHA256: offer.SHA256,
	}, r)
	if err != nil {
		return err
	}
	p.log.Info("recording stored", "recording", m.ID, "user", m.User, "resource", m.Resource, "agent", agent, "bytes", m.Size)
	p.replicate(m)
	return nil
}

// replicate asks one peer to copy a recording an agent gave this proxy,
// so that it outlives this proxy: the next live member after this one in
// id order, of this region if there is one. The agent may give it to
// other proxies too (recording.replicas); copies past the cluster's size
// are not made.
func (p *Proxy) replicate(m recordings.Meta) {
	if p.members == nil {
		return // an upload before the proxy joined: its peers are unknown yet
	}
	members := p.members.Members()
	self := slices.IndexFunc(members, func(x membership.Member) bool { return x.ProxyID == p.cfg.ID })
	var to *membership.Member
	for i := 1; i < len(members); i++ {
		c := &members[(max(self, 0)+i)%len(members)]
		if c.ProxyID == p.cfg.ID {
			continue
		}
		if to == nil || c.Region == p.cfg.Region && to.Region != p.cfg.Region {
			to = c
		}
	}
	if to == nil {
		return
	}
	b, _ := json.Marshal(m)
	p.system.Root.Send(actor.NewPID(to.PeerAddr, RecordingsName), &clusterpb.RecordingCopy{Meta: b, From: p.peerAddr})
}

// copyRecording takes a copy of a recording a peer holds, off the
// recordings server's goroutine.
func (p *Proxy) copyRecording(c *clusterpb.RecordingCopy) {
	var m recordings.Meta
	if p.rec.store == nil || json.Unmarshal(c.Meta, &m) != nil || !model.ValidName(m.ID) || len(m.ID) > 72 {
		return
	}
	if _, err := p.rec.store.Meta(m.ID); err == nil {
		return // held already (the agent gave it here too)
	}
	if p.rec.copying.Add(1) > maxCopies {
		p.rec.copying.Add(-1)
		p.log.Warn("recording not copied: too many copies under way", "recording", m.ID)
		return
	}
	p.rec.mu.Lock()
	if p.rec.stopped {
		p.rec.mu.Unlock()
		p.rec.copying.Add(-1)
		return
	}
	p.rec.copies.Add(1)
	p.rec.mu.Unlock()
	go func() {
		defer p.rec.copies.Done()
		defer p.rec.copying.Add(-1)
		pr, pw := io.Pipe()
		go func() {
			_, err := p.readFromPeer(p.rec.copyCtx, c.From, m.ID, pw)
			if err == nil {
				err = io.EOF
			}
			pw.CloseWithError(err)
		}()
		stored, err := p.rec.store.Put(m, pr)
		pr.CloseWithError(errors.New("copy ended")) // ends the reader if Put stopped early
		if err != nil {
			p.log.Warn("recording not copied from a peer", "recording", m.ID, "err", err)
			return
		}
		p.log.Info("recording copied from a peer", "recording", stored.ID, "bytes", stored.Size)
	}()
}

// recordingsServer answers peers' recording queries and reads.
type recordingsServer struct{ p *Proxy }

func (s *recordingsServer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *clusterpb.RecordingQuery:
		ctx.Respond(s.p.localRecordings(m))
	case *clusterpb.RecordingRead:
		ctx.Respond(s.p.readPiece(m))
	case *clusterpb.RecordingCopy:
		s.p.copyRecording(m)
	}
}

// localRecordings runs q on this proxy's store.
func (p *Proxy) localRecordings(q *clusterpb.RecordingQuery) *clusterpb.RecordingList {
	out := &clusterpb.RecordingList{Proxy: p.cfg.ID}
	if p.rec.store == nil {
		return out
	}
	limit := int(q.Limit)
	if limit <= 0 || limit > usercmd.MaxRecordingsLimit {
		limit = usercmd.MaxRecordingsLimit
	}
	list, more, err := p.rec.store.List(recordings.Query{
		User: q.User, Resource: q.Resource, Session: q.Session, Since: time.Unix(0, q.SinceUnixNano), Limit: limit,
	})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	for _, m := range list {
		b, _ := json.Marshal(m)
		out.Recordings = append(out.Recordings, b)
	}
	out.Truncated = more
	return out
}

// readPiece answers a peer's read of a recording this proxy may hold.
func (p *Proxy) readPiece(rd *clusterpb.RecordingRead) *clusterpb.RecordingPiece {
	if p.rec.store == nil {
		return &clusterpb.RecordingPiece{NotFound: true}
	}
	m, f, err := p.rec.store.Open(rd.Id)
	if errors.Is(err, recordings.ErrNotFound) {
		return &clusterpb.RecordingPiece{NotFound: true}
	}
	if err != nil {
		return &clusterpb.RecordingPiece{Error: err.Error()}
	}
	defer f.Close()
	n := min(int64(max(rd.Length, 0)), recordingPiece, max(m.Size-rd.Offset, 0))
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, rd.Offset); err != nil && !errors.Is(err, io.EOF) {
		return &clusterpb.RecordingPiece{Error: err.Error()}
	}
	return &clusterpb.RecordingPiece{Data: buf, Size: m.Size}
}

// clusterRecordings runs q on every live proxy and merges the answers,
// newest first, each recording once.
func (p *Proxy) clusterRecordings(q *clusterpb.RecordingQuery) (list []recordings.Meta, truncated bool, notes []string) {
	members := p.members.Members()
	results := make([]*clusterpb.RecordingList, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		if m.ProxyID == p.cfg.ID {
			results[i] = p.localRecordings(q)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.system.Root.RequestFuture(actor.NewPID(m.PeerAddr, RecordingsName), q, 10*time.Second).Result()
			r, ok := res.(*clusterpb.RecordingList)
			switch {
			case err != nil:
				r = &clusterpb.RecordingList{Proxy: m.ProxyID, Error: "unreachable: " + err.Error()}
			case !ok:
				r = &clusterpb.RecordingList{Proxy: m.ProxyID, Error: fmt.Sprintf("unexpected answer %T", res)}
			}
			results[i] = r
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range results {
		if r.Error != "" {
			notes = append(notes, fmt.Sprintf("(proxy %s: %s; recordings only it holds are missing)", r.Proxy, r.Error))
			continue
		}
		truncated = truncated || r.Truncated
		for _, b := range r.Recordings {
			var m recordings.Meta
			if err := json.Unmarshal(b, &m); err != nil {
				notes = append(notes, fmt.Sprintf("(proxy %s sent a recording that does not decode)", r.Proxy))
				continue
			}
			if !seen[m.ID] {
				seen[m.ID] = true
				list = append(list, m)
			}
		}
	}
	slices.SortStableFunc(list, func(a, b recordings.Meta) int { return b.Start.Compare(a.Start) })
	if q.Limit > 0 && len(list) > int(q.Limit) {
		list, truncated = list[:q.Limit], true
	}
	return list, truncated, notes
}

// readRecording writes recording id to w: from this proxy's store, or
// from the first live peer that holds it.
func (p *Proxy) readRecording(id string, w io.Writer) error {
	if !model.ValidName(id) || len(id) > 72 {
		return fmt.Errorf("%s is not a recording id (see `warren recordings ls`)", model.Quote(id))
	}
	if p.rec.store != nil {
		_, f, err := p.rec.store.Open(id)
		if err == nil {
			defer f.Close()
			_, err = io.Copy(w, f)
			return err
		}
		if !errors.Is(err, recordings.ErrNotFound) {
			return err
		}
	}
	// Every live peer is asked at once which holds it (a peer that died
	// a moment ago costs a timeout, not a turn); the first that does is
	// read from.
	type probe struct {
		id, addr string
		has      bool
		err      error
	}
	var peers []probe
	for _, m := range p.members.Members() {
		if m.ProxyID != p.cfg.ID {
			peers = append(peers, probe{id: m.ProxyID, addr: m.PeerAddr})
		}
	}
	answers := make(chan probe, len(peers))
	for _, pr := range peers {
		go func() {
			res, err := p.system.Root.RequestFuture(actor.NewPID(pr.addr, RecordingsName),
				&clusterpb.RecordingRead{Id: id}, 5*time.Second).Result()
			piece, ok := res.(*clusterpb.RecordingPiece)
			switch {
			case err != nil:
				pr.err = err
			case !ok:
				pr.err = fmt.Errorf("unexpected answer %T", res)
			case piece.Error != "":
				pr.err = errors.New(piece.Error)
			default:
				pr.has = !piece.NotFound
			}
			answers <- pr
		}()
	}
	var problems []string
	for range peers {
		pr := <-answers
		if pr.err != nil {
			problems = append(problems, fmt.Sprintf("proxy %s: %v", pr.id, pr.err))
		}
		if !pr.has {
			continue
		}
		if _, err := p.readFromPeer(context.Background(), pr.addr, id, w); err != nil {
			return fmt.Errorf("read recording %s from proxy %s: %w", id, pr.id, err)
		}
		return nil
	}
	if len(problems) > 0 {
		return fmt.Errorf("no live proxy holds recording %s (%s)", id, strings.Join(problems, "; "))
	}
	return fmt.Errorf("no live proxy holds recording %s; `warren recordings ls` lists those there are (an agent whose proxies were away may still hold it in its spool)", id)
}

// readFromPeer copies a recording from the peer at addr; found is false
// when the peer does not hold it (or did not answer before any byte).
func (p *Proxy) readFromPeer(ctx context.Context, addr, id string, w io.Writer) (found bool, err error) {
	var off, size int64 = 0, -1
	for size < 0 || off < size {
		if err := ctx.Err(); err != nil {
			return off > 0, err
		}
		res, err := p.system.Root.RequestFuture(actor.NewPID(addr, RecordingsName),
			&clusterpb.RecordingRead{Id: id, Offset: off, Length: recordingPiece}, 30*time.Second).Result()
		if err != nil {
			return off > 0, err
		}
		piece, ok := res.(*clusterpb.RecordingPiece)
		switch {
		case !ok:
			return off > 0, fmt.Errorf("unexpected answer %T", res)
		case piece.NotFound:
			return false, nil
		case piece.Error != "":
			return off > 0, errors.New(piece.Error)
		case size >= 0 && piece.Size != size:
			return true, errors.New("the recording changed while it was read")
		case len(piece.Data) == 0 && off < piece.Size:
			return true, errors.New("the peer sent an empty piece")
		}
		size = piece.Size
		if _, err := w.Write(piece.Data); err != nil {
			return true, err
		}
		off += int64(len(piece.Data))
	}
	return true, nil
}

// ClusterRecordings and ReadRecording serve the recordings command
// (usercmd.RecordingProxy).
func (v commandView) ClusterRecordings(q *clusterpb.RecordingQuery) ([]recordings.Meta, bool, []string) {
	return v.p.clusterRecordings(q)
}

func (v commandView) LocalRecordings(q *clusterpb.RecordingQuery) ([]recordings.Meta, bool, error) {
	r := v.p.localRecordings(q)
	if r.Error != "" {
		return nil, false, errors.New(r.Error)
	}
	var list []recordings.Meta
	for _, b := range r.Recordings {
		var m recordings.Meta
		if json.Unmarshal(b, &m) == nil {
			list = append(list, m)
		}
	}
	return list, r.Truncated, nil
}

func (v commandView) ReadRecording(id string, w io.Writer) error { return v.p.readRecording(id, w) }
