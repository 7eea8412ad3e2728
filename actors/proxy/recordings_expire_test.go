package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/warren-proxy/warren/storage/recordings"
)

// TestRecordingsRetention: with recordings.retention a proxy deletes the
// recordings it stored longer ago, and logs it; without it nothing goes.
func TestRecordingsRetention(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	st, err := recordings.OpenStore(t.TempDir(), recordings.StoreOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cast := []byte("{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1796000000}\n[0.5,\"o\",\"hi\"]\n")
	sum := sha256.Sum256(cast)
	if _, err := st.Put(recordings.Meta{ID: "rec1", Session: "rec1", Size: int64(len(cast)), SHA256: hex.EncodeToString(sum[:])}, bytes.NewReader(cast)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(31 * 24 * time.Hour)
	var logs bytes.Buffer
	p := &Proxy{log: slog.New(slog.NewTextHandler(&logs, nil))}
	p.cfg.Clock = clock
	p.rec.store = st
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one sweep, then return

	p.expireRecordings(ctx, time.Hour) // no retention: kept
	if _, err := st.Meta("rec1"); err != nil {
		t.Fatalf("without recordings.retention the recording went: %v", err)
	}
	p.cfg.Recordings.Retention = 30 * 24 * time.Hour
	p.expireRecordings(ctx, time.Hour)
	if _, err := st.Meta("rec1"); err == nil {
		t.Fatal("a recording stored 31 days ago outlived a 30-day retention")
	}
	if !bytes.Contains(logs.Bytes(), []byte("recordings expired")) || !bytes.Contains(logs.Bytes(), []byte("count=1")) {
		t.Errorf("the log does not say so: %s", logs.String())
	}
}
