package access

import (
	"testing"
	"time"
)

// FuzzParseRole feeds role files (from operators, and replicated between
// proxies) to the parser and, when one parses, to every decision: nothing
// may panic, and a role that parses must validate.
func FuzzParseRole(f *testing.F) {
	for _, s := range []string{devRole, "name: x\nallow: {resources: {'*': '*'}, logins: ['*']}\n", "name: y\ndeny: {ports: ['1-65535']}\n", "{", "name: [1]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRole(data)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("a parsed role does not validate: %v", err)
		}
		p := NewPolicy([]Role{r}, nil, nil, nil)
		id := Identity{User: "u", Roles: []string{r.Name}, Logins: []string{"root", "ubuntu"}, CertTTL: time.Hour}
		for _, tg := range []Target{
			{Name: "n", Kind: "ssh", Labels: map[string]string{"env": "dev"}},
			{Name: "db", Kind: "tcp", Port: 5432},
		} {
			p.Reach(id, tg)
			p.Login(id, tg, "root")
			p.Forwarding(id, tg, "port")
		}
		p.Can(id, "admin")
		p.CheckIdentity(id, time.Unix(0, 0))
	})
}

// FuzzDecodeGrant feeds certificate grant extensions to the decoder.
func FuzzDecodeGrant(f *testing.F) {
	f.Add(Grant{Token: "0123456789ab", Names: []string{"web-*"}, Labels: map[string]string{"env": "prod"}}.Encode())
	f.Add(`{"names":[""]}`)
	f.Fuzz(func(t *testing.T, s string) {
		g, err := DecodeGrant(s)
		if err != nil {
			return
		}
		if _, err := DecodeGrant(g.Encode()); err != nil {
			t.Fatalf("a decoded grant does not round-trip: %v", err)
		}
		NewPolicy(nil, nil, nil, nil).MayServe("a", g, "web-1", map[string]string{"env": "x"})
	})
}
