package revtunnel

import (
	"reflect"
	"testing"
)

// FuzzHeartbeat feeds arbitrary payloads to what Serve does with a
// heartbeat: decode, then Validate. Neither may panic, and a heartbeat
// Validate accepts must hold only valid, unique names of known kinds and
// survive a round trip through encode.
func FuzzHeartbeat(f *testing.F) {
	f.Add([]byte(`{"seq":1,"resources":[{"name":"web","kind":"tcp","healthy":true,"labels":{"env":"prod"}}]}`))
	f.Add([]byte(`{"seq":2,"resources":[{"name":"a","kind":"ssh"},{"name":"a","kind":"tcp"}]}`))
	f.Add([]byte(`{"resources":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"seq":-1}`))
	f.Add([]byte(`{"resources":[{"name":"web\u0000","kind":"ssh"}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var hb Heartbeat
		if err := decode(payload, &hb); err != nil {
			return
		}
		if err := hb.Validate(); err != nil {
			return
		}
		seen := map[string]bool{}
		for i, r := range hb.Resources {
			if !ValidName(r.Name) || (r.Kind != KindSSH && r.Kind != KindTCP) || seen[r.Name] {
				t.Fatalf("Validate accepted resources[%d] = %+v", i, r)
			}
			seen[r.Name] = true
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
