package recordings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-proxy/warren/internal/atomicfile"
	"github.com/warren-proxy/warren/internal/model"
)

// ErrSpoolFull is returned by writes that would take the spool past its
// cap.
var ErrSpoolFull = errors.New("the recording spool is full")

// SpoolMeta is what the agent keeps beside a spooled recording.
type SpoolMeta struct {
	ID      string    `json:"id"`
	Ticket  string    `json:"ticket"`
	Login   string    `json:"login,omitempty"`
	Started time.Time `json:"started"`
	// Uploaded are the proxies that hold the recording already.
	Uploaded []string `json:"uploaded,omitempty"`
}

// Spool is the agent's directory of recordings. It is safe for
// concurrent use.
type Spool struct {
	dir string
	max int64

	mu   sync.Mutex // guards used
	used int64      // bytes of every file in the spool
}

// validID accepts recording ids: names, at most 72 bytes.
func validID(id string) bool { return len(id) <= 72 && model.ValidName(id) }

// OpenSpool opens (creating) the spool in dir, capped at maxBytes, and
// closes the recordings a stopped agent left open.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create recording spool: %w", err)
	}
	s := &Spool{dir: dir, max: maxBytes}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read recording spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if id, ok := strings.CutSuffix(name, ".cast.part"); ok && validID(id) {
			if err := recoverPart(filepath.Join(dir, name), filepath.Join(dir, id+".cast")); err != nil {
				return nil, fmt.Errorf("recover recording %s: %w", id, err)
			}
		}
	}
	entries, _ = os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			s.used += info.Size()
		}
	}
	return s, nil
}

// recoverMarker closes a recording whose agent stopped mid-session.
const recoverMarker = "the agent stopped during this session; the recording ends here"

// recoverPart cuts a .part file after its last whole line, closes it
// with a marker at its last event's time, and makes it pending.
func recoverPart(part, cast string) error {
	b, err := os.ReadFile(part)
	if err != nil {
		return err
	}
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		// Not even a header: nothing was recorded.
		return os.Remove(part)
	}
	b = b[:i+1]
	last := 0.0
	if j := bytes.LastIndexByte(b[:i], '\n'); j >= 0 {
		var ev []json.RawMessage
		if json.Unmarshal(b[j+1:i], &ev) == nil && len(ev) == 3 {
			last, _ = strconv.ParseFloat(string(ev[0]), 64)
		}
	}
	b = fmt.Appendf(b, "[%s,\"m\",%q]\n", strconv.FormatFloat(last, 'f', 6, 64), recoverMarker)
	if err := atomicfile.Write(cast, b, 0o600); err != nil {
		return err
	}
	return os.Remove(part)
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Used is the spool's size in bytes.
func (s *Spool) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// reserve takes n bytes of the cap, or fails with ErrSpoolFull.
func (s *Spool) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.used+n > s.max {
		return fmt.Errorf("%w (%d of %d bytes used; raise recording.spool_max_bytes or let the proxies take the pending recordings)", ErrSpoolFull, s.used, s.max)
	}
	s.used += n
	return nil
}

func (s *Spool) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.mu.Unlock()
}

func (s *Spool) path(id, ext string) string { return filepath.Join(s.dir, id+ext) }

// Create starts a recording: its metadata file, and its cast to write.
func (s *Spool) Create(m SpoolMeta) (*SpoolFile, error) {
	if !validID(m.ID) {
		return nil, fmt.Errorf("invalid recording id %s", model.Quote(m.ID))
	}
	if _, err := os.Stat(s.path(m.ID, ".cast")); err == nil {
		return nil, fmt.Errorf("recording %s exists already", m.ID)
	}
	if err := s.writeMeta(m, true); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.path(m.ID, ".cast.part"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		s.removeMeta(m.ID)
		return nil, fmt.Errorf("create recording: %w", err)
	}
	return &SpoolFile{s: s, f: f, id: m.ID}, nil
}

// writeMeta writes a recording's metadata; capped, it must fit in the
// spool (a new recording), else it is written whatever the spool holds
// (a few hundred bytes more for a recording there already: its upload
// must be noted, or a full spool would never empty).
func (s *Spool) writeMeta(m SpoolMeta, capped bool) error {
	b, _ := json.Marshal(m)
	old := int64(0)
	if info, err := os.Stat(s.path(m.ID, ".json")); err == nil {
		old = info.Size()
	}
	if capped {
		if err := s.reserve(int64(len(b)) - old); err != nil {
			return err
		}
	} else {
		s.release(old - int64(len(b)))
	}
	if err := atomicfile.Write(s.path(m.ID, ".json"), b, 0o600); err != nil {
		s.release(int64(len(b)) - old)
		return fmt.Errorf("write recording metadata: %w", err)
	}
	return nil
}

func (s *Spool) removeMeta(id string) {
	if info, err := os.Stat(s.path(id, ".json")); err == nil {
		if os.Remove(s.path(id, ".json")) == nil {
			s.release(info.Size())
		}
	}
}

// SpoolFile is a recording being written.
type SpoolFile struct {
	s    *Spool
	f    *os.File
	id   string
	good int64 // bytes of the writes that were whole
}

// Write appends p, within the spool's cap: a write that does not fit
// fails with ErrSpoolFull and writes nothing.
func (f *SpoolFile) Write(p []byte) (int, error) {
	if err := f.s.reserve(int64(len(p))); err != nil {
		return 0, err
	}
	n, err := f.f.Write(p)
	if n < len(p) {
		f.s.release(int64(len(p) - n))
	}
	if err == nil {
		f.good += int64(n)
	}
	return n, err
}

// Seal ends a recording whose writes failed: what a failed write left is
// cut off, so the file ends on a whole line, and last (a closing marker
// line, a few hundred bytes) is appended past the spool's cap, so that
// the recording says it stopped. A failure here is returned; Commit
// still keeps what there is.
func (f *SpoolFile) Seal(last []byte) error {
	if info, err := f.f.Stat(); err == nil && info.Size() > f.good {
		f.s.release(info.Size() - f.good) // what a failed write left, cut below
	}
	if err := f.f.Truncate(f.good); err != nil {
		return fmt.Errorf("seal recording %s: %w", f.id, err)
	}
	if _, err := f.f.Seek(f.good, io.SeekStart); err != nil {
		return fmt.Errorf("seal recording %s: %w", f.id, err)
	}
	n, err := f.f.Write(last)
	f.s.mu.Lock()
	f.s.used += int64(n)
	f.s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("seal recording %s: %w", f.id, err)
	}
	f.good += int64(n)
	return nil
}

// Commit fsyncs and closes the cast and makes it pending upload.
func (f *SpoolFile) Commit() error {
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.s.path(f.id, ".cast.part"), f.s.path(f.id, ".cast"))
	}
	if err == nil {
		err = syncDir(f.s.dir)
	}
	if err != nil {
		return fmt.Errorf("commit recording %s: %w", f.id, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Pending lists the recordings whose sessions ended, oldest first.
func (s *Spool) Pending() ([]SpoolMeta, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read recording spool: %w", err)
	}
	var out []SpoolMeta
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".cast")
		if !ok || !validID(id) {
			continue
		}
		m, err := s.Meta(id)
		if err != nil {
			continue // a cast without metadata cannot be uploaded; Remove cleans it
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b SpoolMeta) int { return a.Started.Compare(b.Started) })
	return out, nil
}

// Meta reads a recording's metadata.
func (s *Spool) Meta(id string) (SpoolMeta, error) {
	var m SpoolMeta
	if !validID(id) {
		return m, fmt.Errorf("invalid recording id %s", model.Quote(id))
	}
	b, err := os.ReadFile(s.path(id, ".json"))
	if err != nil {
		return m, fmt.Errorf("read recording metadata: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.ID != id {
		return m, fmt.Errorf("recording metadata of %s is damaged", id)
	}
	return m, nil
}

// Open opens a pending recording's cast.
func (s *Spool) Open(id string) (*os.File, error) {
	if !validID(id) {
		return nil, fmt.Errorf("invalid recording id %s", model.Quote(id))
	}
	return os.Open(s.path(id, ".cast"))
}

// MarkUploaded records that proxy holds the recording, and returns the
// metadata as it now is.
func (s *Spool) MarkUploaded(id, proxy string) (SpoolMeta, error) {
	m, err := s.Meta(id)
	if err != nil {
		return m, err
	}
	if !slices.Contains(m.Uploaded, proxy) {
		m.Uploaded = append(m.Uploaded, proxy)
	}
	return m, s.writeMeta(m, false)
}

// Remove deletes a recording the proxies hold.
func (s *Spool) Remove(id string) error {
	if !validID(id) {
		return fmt.Errorf("invalid recording id %s", model.Quote(id))
	}
	for _, ext := range []string{".cast", ".json"} {
		info, err := os.Stat(s.path(id, ext))
		if err != nil {
			continue
		}
		if err := os.Remove(s.path(id, ext)); err != nil {
			return fmt.Errorf("remove recording %s: %w", id, err)
		}
		s.release(info.Size())
	}
	return nil
}

var _ io.Writer = (*SpoolFile)(nil)

// DefaultMaxBytes is the default cap of one recording at the node; the
// proxies take up to DefaultMaxBytes+StoreSlack by default (a recovered
// recording ends with a marker past its cap).
const (
	DefaultMaxBytes = 64 << 20
	StoreSlack      = 1 << 20
)
