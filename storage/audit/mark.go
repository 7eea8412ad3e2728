package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// mark is the sidecar file next to a log (path + ".mark"). It records the
// id of the log in place and whether that log has held events, so that Open
// notices a log that was swapped for another or for an empty one: a deleted
// or emptied audit log would otherwise look exactly like a proxy that
// served no session. It is written when a log is created and once when the
// log first holds an event, never on every append.
//
// It is a tripwire, not a proof: whoever can replace the log can replace
// the mark too.
type mark struct {
	LogID     string `json:"log_id"`
	HasEvents bool   `json:"has_events"`
}

func markPath(path string) string { return path + ".mark" }

// readMark returns the mark next to path; fs.ErrNotExist if there is none.
func readMark(path string) (mark, error) {
	b, err := os.ReadFile(markPath(path))
	if err != nil {
		return mark{}, err
	}
	var m mark
	if err := json.Unmarshal(b, &m); err != nil {
		return mark{}, fmt.Errorf("decode %s: %w", markPath(path), err)
	}
	if m.LogID == "" {
		return mark{}, fmt.Errorf("decode %s: no log id", markPath(path))
	}
	return m, nil
}

// writeMark replaces the mark next to path atomically: a crash leaves the
// old mark or the new one, never a torn one.
func writeMark(path string, m mark) (err error) {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(markPath(path))+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("write audit log mark: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write audit log mark: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write audit log mark: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write audit log mark: %w", err)
	}
	if err := os.Rename(f.Name(), markPath(path)); err != nil {
		return fmt.Errorf("write audit log mark: %w", err)
	}
	// The rename is durable once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write audit log mark: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write audit log mark: sync directory: %w", err)
	}
	return nil
}

// checkMark compares the mark next to path with the log as opened (its id,
// whether it holds events) and brings the mark up to date. It returns a
// sentence for the operator if the log is not the one the mark recorded, ""
// otherwise. The mark then follows the log in place, so a replacement is
// reported at the first Open after it; the log line and Replaced keep it.
func checkMark(path, id string, hasEvents bool, warn func(msg string, args ...any)) string {
	want := mark{LogID: id, HasEvents: hasEvents}
	m, err := readMark(path)
	var replaced string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new log, or one from before marks: start tracking it.
	case err != nil:
		warn("audit log mark unreadable; writing a new one", "path", markPath(path), "err", err)
	case m.LogID != id && m.HasEvents && !hasEvents:
		replaced = fmt.Sprintf("audit log %s was replaced by an empty log (or deleted): %s says the log there (id %s) held events, this one (id %s) holds none", path, markPath(path), m.LogID, id)
	case m.LogID != id:
		replaced = fmt.Sprintf("audit log %s was replaced: its id is %s but %s records log %s", path, id, markPath(path), m.LogID)
	case m.HasEvents && !hasEvents:
		replaced = fmt.Sprintf("audit log %s was emptied: %s says it held events, it holds none", path, markPath(path))
	case m == want:
		return ""
	}
	if err := writeMark(path, want); err != nil {
		warn("audit log mark not written; a replaced log may go unnoticed", "path", markPath(path), "err", err)
	}
	return replaced
}
