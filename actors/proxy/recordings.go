package proxy

import (
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
	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/recordings"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Session recordings on a proxy.
//
// Agents upload each recording to the proxies they hold tunnels to (each
// with the ticket the dialing proxy signed); every proxy that takes one
// stores it in <data_dir>/recordings. Any proxy answers `recordings ls`
// for the whole cluster (it asks every live member, as audit does) and
// `recordings get` for any recording a live member holds: it reads it
// from a peer that has it, in pieces, when it has none itself. A
// recording survives the loss of a proxy as long as another holds it:
// agents keep a recording in their spool until recording.replicas
// proxies have it (2 by default).

// RecordingsConfig is the recordings section of proxy.yaml.
type RecordingsConfig struct {
	// MaxBytes bounds one recording an agent uploads (default 65 MiB:
	// the agents' default cap, 64 MiB, and room for a closing marker).
	MaxBytes int64 `yaml:"max_bytes"`
}

func (c *RecordingsConfig) checkAndSetDefaults(errs *conf.Errors) {
	switch {
	case c.MaxBytes == 0:
		c.MaxBytes = recordings.DefaultMaxBytes + recordings.StoreSlack
	case c.MaxBytes < 64<<10 || c.MaxBytes > 16<<30:
		errs.Addf("recordings.max_bytes", "%d is outside 64 KiB to 16 GiB", c.MaxBytes)
	}
}

// RecordingsName is the actor name of every proxy's recordings server:
// peers ask it what it stores (RecordingQuery) and for pieces of a
// recording (RecordingRead).
const RecordingsName = "recordings"

// recordingPiece is the most one RecordingRead returns.
const recordingPiece = 1 << 20

// recordingState is the proxy's recording store and its counters.
type recordingState struct {
	store    *recordings.Store
	failures atomic.Uint64 // uploads refused or failed
}

// openRecordings opens the store and starts the recordings server.
func (p *Proxy) openRecordings() error {
	st, err := recordings.OpenStore(filepath.Join(p.cfg.DataDir, "recordings"), recordings.StoreOptions{
		MaxBytes: p.cfg.Recordings.MaxBytes, Now: p.cfg.Clock,
	})
	if err != nil {
		return err
	}
	p.rec.store = st
	if _, err := p.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &recordingsServer{p: p} }), RecordingsName); err != nil {
		return fmt.Errorf("spawn the recordings server: %w", err)
	}
	return nil
}

func (p *Proxy) closeRecordings() error {
	if p.rec.store == nil {
		return nil
	}
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
		p.log.Warn("recording refused", "agent", agent, "recording", offer.ID, "err", err)
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
	return nil
}

// recordingsServer answers peers' recording queries and reads.
type recordingsServer struct{ p *Proxy }

func (s *recordingsServer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *clusterpb.RecordingQuery:
		ctx.Respond(s.p.localRecordings(m))
	case *clusterpb.RecordingRead:
		ctx.Respond(s.p.readPiece(m))
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
		if _, err := p.readFromPeer(pr.addr, id, w); err != nil {
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
func (p *Proxy) readFromPeer(addr, id string, w io.Writer) (found bool, err error) {
	var off, size int64 = 0, -1
	for size < 0 || off < size {
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
