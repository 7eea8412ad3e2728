package revtunnel

import (
	"reflect"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/internal/model"
)

// FuzzHeartbeat feeds arbitrary payloads to what Serve does with a
// heartbeat: decode, then Validate. Neither may panic, and a heartbeat
// Validate accepts must hold only valid, unique names of known kinds,
// within the caps (resources, labels, detail, port), and survive a round
// trip through encode.
func FuzzHeartbeat(f *testing.F) {
	f.Add([]byte(`{"seq":1,"resources":[{"name":"web","kind":"tcp","healthy":true,"labels":{"env":"prod"}}]}`))
	f.Add([]byte(`{"seq":2,"resources":[{"name":"a","kind":"ssh"},{"name":"a","kind":"tcp"}]}`))
	f.Add([]byte(`{"resources":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"seq":-1}`))
	f.Add([]byte(`{"resources":[{"name":"web\u0000","kind":"ssh"}]}`))
	f.Add([]byte(`{"resources":[{"name":"db","kind":"tcp","port":65536}]}`))
	f.Add([]byte(`{"resources":[{"name":"db","kind":"tcp","port":5432,"labels":{"e v":"x","k":"a,b"}}]}`))
	f.Add([]byte(`{"resources":[{"name":"db","kind":"tcp","detail":"` + strings.Repeat("d", 300) + `"}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var hb Heartbeat
		if err := decode(payload, &hb); err != nil {
			return
		}
		if err := hb.Validate(); err != nil {
			return
		}
		if len(hb.Resources) > MaxResources {
			t.Fatalf("Validate accepted %d resources, more than %d", len(hb.Resources), MaxResources)
		}
		seen := map[string]bool{}
		labelBytes := 0
		for i, r := range hb.Resources {
			if !model.ValidName(r.Name) || (r.Kind != model.KindSSH && r.Kind != model.KindTCP) || seen[r.Name] {
				t.Fatalf("Validate accepted resources[%d] = %+v", i, r)
			}
			seen[r.Name] = true
			if err := model.CheckLabels(r.Labels); err != nil {
				t.Fatalf("Validate accepted resources[%d] with labels %q: %v", i, r.Labels, err)
			}
			labelBytes += model.LabelBytes(r.Labels)
			if len(r.Detail) > maxDetail || r.Port < 0 || r.Port > 65535 {
				t.Fatalf("Validate accepted resources[%d] with a %d-byte detail, port %d", i, len(r.Detail), r.Port)
			}
		}
		if labelBytes > MaxLabelBytes {
			t.Fatalf("Validate accepted %d bytes of labels, more than %d", labelBytes, MaxLabelBytes)
		}
		var again Heartbeat
		if err := decode(encode(hb), &again); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", hb, err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("a valid heartbeat is invalid after a round trip: %v", err)
		}
	})
}

// FuzzLogin feeds arbitrary payloads to what Serve does with a login
// report it may accept: decode, then Validate. Neither may panic; a
// report Validate accepts has a session id as proxies make them and a
// printable login and key id, and survives a round trip unchanged.
func FuzzLogin(f *testing.F) {
	f.Add([]byte(`{"session_id":"s1","login":"ubuntu","key_id":"alice"}`))
	f.Add([]byte(`{"session_id":"s1","login":"root"}`))
	f.Add([]byte(`{"session_id":"","login":"root"}`))
	f.Add([]byte(`{"session_id":"s1","login":"a b"}`))
	f.Add([]byte(`{"session_id":"s1","login":"root","key_id":"a\nb"}`))
	f.Add([]byte(`{"session_id":"s/../1","login":"root"}`))
	f.Add([]byte(`{"session_id":"s1","login":"\u00e9"}`))
	f.Add([]byte(`{"session_id":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var l Login
		if err := decode(payload, &l); err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			return
		}
		if !model.ValidName(l.SessionID) {
			t.Fatalf("Validate accepted session id %q", l.SessionID)
		}
		if l.Login == "" || len(l.Login) > 32 || strings.ContainsFunc(l.Login, func(r rune) bool { return r <= ' ' || r > '~' }) {
			t.Fatalf("Validate accepted login %q", l.Login)
		}
		if len(l.KeyID) > 255 || strings.ContainsFunc(l.KeyID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("Validate accepted key id %q", l.KeyID)
		}
		var again Login
		if err := decode(encode(l), &again); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", l, err)
		}
		if again != l {
			t.Fatalf("round trip changed %+v into %+v", l, again)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("a valid login report is invalid after a round trip: %v", err)
		}
	})
}

// FuzzDialRequest feeds arbitrary extra data to the agent's decoding of a
// dial channel. It must not panic, and what it decodes must survive a
// round trip unchanged.
func FuzzDialRequest(f *testing.F) {
	f.Add([]byte(`{"session_id":"s1","resource":"web","port":8080,"user":"alice","client_addr":"192.0.2.1:5555"}`))
	f.Add([]byte(`{"port":4294967296}`))
	f.Add([]byte(`{"resource":"\ud800"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, extra []byte) {
		var req DialRequest
		if err := decode(extra, &req); err != nil {
			return
		}
		var again DialRequest
		if err := decode(encode(req), &again); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", req, err)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed %+v into %+v", req, again)
		}
	})
}
