// Package access is Warren's access policy: roles that allow and deny,
// join tokens and the grants they give agents, the claims agents hold on
// names, and locks. It is pure: a [Policy] is an immutable value built from
// the cluster's replicated configuration, and every decision is a function
// of the policy and its inputs, tested apart from the network.
//
// # Who may reach what
//
// A user's certificate carries their roles. Nothing is allowed by default.
// A role's allow side reaches a resource when its label selector (keys
// AND-ed, the values of a key OR-ed, '*' globs) and its name globs hold,
// and, for a tcp resource, its port is listed (or no ports are). For an ssh
// resource the user also needs a login: one of the certificate's logins
// that a reaching role lists (or "*": all of them). A role's deny side
// wins over every allow of every role: a resource, name, port, login or
// option it names is refused everywhere.
//
// The entry proxy decides before it dials (Reach), listings show only what
// a user may reach (See), and the agent's embedded SSH server decides
// again for the login the user picked (Login, Forwarding).
//
// # Who may serve what
//
// An agent serves the names its [Grant] allows: the globs of a scoped
// grant, or, for an unscoped one, the names it was first to claim. Grants
// come from join tokens and are signed into agents' certificates.
package access
