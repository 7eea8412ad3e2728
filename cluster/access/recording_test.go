package access

import (
	"strings"
	"testing"
)

func TestRecordingOptions(t *testing.T) {
	roles := []Role{
		{Name: "dev", Allow: Rules{Logins: []string{"*"}, Names: []string{"*"}}},
		{Name: "typed", RecordInput: true},
		{Name: "strict", RequireRecording: true},
		{Name: "reader", Allow: Rules{Recordings: true}},
	}
	p := NewPolicy(roles, nil, nil, nil)
	cases := []struct {
		roles []string
		want  RecordingOptions
	}{
		{[]string{"dev"}, RecordingOptions{}},
		{[]string{"dev", "typed"}, RecordingOptions{Input: true}},
		{[]string{"strict", "dev"}, RecordingOptions{Required: true, RequiredBy: "strict"}},
		{[]string{"typed", "strict", "missing"}, RecordingOptions{Input: true, Required: true, RequiredBy: "strict"}},
		{[]string{"admin"}, RecordingOptions{}},
	}
	for _, c := range cases {
		if got := p.Recording(Identity{User: "alice", Roles: c.roles}); got != c.want {
			t.Errorf("roles %v: got %+v, want %+v", c.roles, got, c.want)
		}
	}
	for _, c := range []struct {
		roles []string
		want  bool
	}{{[]string{"admin"}, true}, {[]string{"reader"}, true}, {[]string{"auditor"}, false}, {[]string{"access", "dev"}, false}} {
		d := p.Can(Identity{User: "alice", Roles: c.roles}, "recordings")
		if d.Allowed != c.want {
			t.Errorf("Can(%v, recordings) = %v, want %v", c.roles, d.Allowed, c.want)
		}
		if !d.Allowed && !strings.Contains(d.Reason, "allow.recordings") {
			t.Errorf("refusal %q does not say which role would do", d.Reason)
		}
	}
	r, err := ParseRole([]byte("name: strict2\nrecord_input: true\nrequire_recording: true\nallow:\n  recordings: true\n"))
	if err != nil || !r.RecordInput || !r.RequireRecording || !r.Allow.Recordings {
		t.Errorf("ParseRole = %+v, %v", r, err)
	}
}
