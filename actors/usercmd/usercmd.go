// Package usercmd holds the commands users run on a proxy over its SSH
// port (`ssh -p 3023 alice@proxy ls`, and `warren ls`, `warren token add`
// … which run them for the user): ls, status, whoami, known-hosts, audit,
// recordings, resource, token, role, lock and help, with their text
// tables. recordings needs more of the proxy than [Proxy]: a proxy that
// keeps recordings implements [RecordingProxy] too.
//
// A command sees the proxy only through [Proxy]: the router's snapshot,
// configuration writes through the router, the cluster's status and audit
// log. Every command checks the user's roles itself (admin for token, role,
// lock and resource changes; audit for audit; recordings for recordings).
package usercmd

import (
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/usersh"
)

// Proxy is what the commands need of the proxy they run on.
type Proxy interface {
	// Snapshot is the router's current view: routes, resources, policy.
	Snapshot() *router.Snapshot
	Now() time.Time
	// Status is every member's counts and peer link.
	Status() model.Statuses
	// Put writes one configuration entry (v as JSON) through the router,
	// durably here and sent to the peers; PutConfig and PutDefinition
	// write what the router's messages say.
	Put(key string, v any) error
	PutConfig(m *router.PutConfig) error
	PutDefinition(m *router.PutDefinition) error
	// CreateToken stores a join token and returns its secret.
	CreateToken(req access.TokenRequest, createdBy string) (string, access.Token, error)
	// LocalAudit queries this proxy's audit log; ClusterAudit every
	// proxy's, merged newest first.
	LocalAudit(q *clusterpb.AuditQuery) *clusterpb.AuditResult
	ClusterAudit(q *clusterpb.AuditQuery) (evs []audit.Event, truncated bool, notes []string)
	// Help is the text of `help`: how to use this proxy.
	Help() string
	// Drain makes this proxy drain and stop (as SIGTERM does), at user's
	// word, and returns how many sessions entered through it.
	Drain(user string) int
}

// Commands runs users' commands on one proxy.
type Commands struct{ P Proxy }

// MaxAuditLimit bounds what one audit query returns, per proxy and merged.
const MaxAuditLimit = 100000

// AccessIdentity is the access policy's view of a user connection.
func AccessIdentity(id usersh.Identity) access.Identity {
	return access.Identity{User: id.User, Roles: id.Roles, Logins: id.Logins, CertTTL: id.CertTTL}
}
