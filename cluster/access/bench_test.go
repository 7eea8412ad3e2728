package access

import (
	"fmt"
	"testing"
)

// benchPolicy is a cluster with many roles and resources: 1,000 roles of a
// two-key selector each (plus a deny rule on every tenth), and 10,000
// resources with four labels. The user holds five roles.
func benchPolicy() (*Policy, Identity, []Target) {
	var roles []Role
	for i := range 1000 {
		r := Role{
			Name: fmt.Sprintf("team-%d", i),
			Allow: Rules{
				Logins:    []string{"ubuntu", "deploy"},
				Resources: Selector{"team": {fmt.Sprintf("t%d", i), fmt.Sprintf("t%d-*", i)}, "env": {"dev", "staging", "prod"}},
				Ports:     []string{"5432", "8000-8099"},
			},
		}
		if i%10 == 0 {
			r.Deny = Rules{Resources: Selector{"tier": {"restricted"}}, Logins: []string{"root"}}
		}
		roles = append(roles, r)
	}
	targets := make([]Target, 10000)
	for i := range targets {
		targets[i] = Target{
			Name: fmt.Sprintf("res-%d", i),
			Kind: []string{"ssh", "tcp"}[i%2],
			Port: 5432,
			Labels: map[string]string{
				"team": fmt.Sprintf("t%d", i%1000),
				"env":  []string{"dev", "staging", "prod"}[i%3],
				"tier": []string{"normal", "restricted"}[i%7/6],
				"zone": fmt.Sprintf("z%d", i%5),
			},
		}
	}
	id := Identity{User: "alice", Roles: []string{"team-1", "team-10", "team-200", "team-999", "access-missing"}, Logins: []string{"ubuntu", "root"}}
	return NewPolicy(roles, nil, nil, nil), id, targets
}

// BenchmarkReach is one access decision (the entry proxy's, before a dial).
func BenchmarkReach(b *testing.B) {
	p, id, targets := benchPolicy()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Reach(id, targets[i%len(targets)])
		i++
	}
}

// BenchmarkListFilter filters a listing of 10,000 resources for one user.
func BenchmarkListFilter(b *testing.B) {
	p, id, targets := benchPolicy()
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		see := p.Seer(id)
		for _, t := range targets {
			if see(t) {
				n++
			}
		}
		if n == 0 {
			b.Fatal("the user sees nothing")
		}
	}
}
