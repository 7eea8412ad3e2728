package usercmd

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-proxy/warren/actors/session"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/usersh"
)

// Run runs a proxy command for a user; it returns the exit status.
func (c Commands) Run(user usersh.Identity, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"help"}
	}
	pol := c.P.Snapshot().Policy
	id := AccessIdentity(user)
	// A lock that lands while a command runs ends the connection; one that
	// is already there was refused at login. Checked again here for a
	// connection that raced the lock.
	if reason := pol.CheckIdentity(id, c.P.Now()); reason != "" {
		fmt.Fprintln(stderr, "warren: "+reason)
		return 1
	}
	switch args[0] {
	case "ls":
		return c.ls(id, args[1:], stdout, stderr)
	case "whoami":
		c.whoami(user, stdout)
		return 0
	case "audit":
		if d := pol.Can(id, "audit"); !d.Allowed {
			fmt.Fprintln(stderr, "warren: "+d.Reason)
			return 1
		}
		return c.audit(args[1:], stdout, stderr)
	case "recordings":
		if d := pol.Can(id, "recordings"); !d.Allowed {
			fmt.Fprintln(stderr, "warren: "+d.Reason)
			return 1
		}
		return c.recordingsCmd(args[1:], stdout, stderr)
	case "token", "role", "lock":
		if d := pol.Can(id, "admin"); !d.Allowed {
			fmt.Fprintln(stderr, "warren: "+d.Reason)
			return 1
		}
		return c.admin(user.User, args, stdin, stdout, stderr)
	case "status":
		fs := flag.NewFlagSet("status", flag.ContinueOnError)
		fs.SetOutput(stderr)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		st := c.P.Status()
		if !pol.Can(id, "admin").Allowed {
			st = st.ForUser() // the cluster's shape, not its agents and routes
		}
		WriteStatus(stdout, st, *asJSON)
		return 0
	case "resource":
		return c.resource(id, args[1:], stdin, stdout, stderr)
	case "known-hosts":
		c.knownHosts(id, stdout)
		return 0
	case "help":
		fmt.Fprint(stdout, c.P.Help())
		return 0
	case "drain":
		if d := pol.Can(id, "admin"); !d.Allowed {
			fmt.Fprintln(stderr, "warren: "+d.Reason)
			return 1
		}
		if len(args) > 1 {
			fmt.Fprintln(stderr, "warren: drain takes no arguments")
			return 2
		}
		n := c.P.Drain(user.User)
		fmt.Fprintf(stdout, "draining: the proxy hands its agents to other proxies, moves the sessions it forwards, gives the %d sessions that entered through it its shutdown grace (shutdown.grace), then stops; this connection ends with it\n", n)
		return 0
	default:
		fmt.Fprintf(stderr, "warren: unknown proxy command %s; commands are ls, status, whoami, known-hosts, audit, recordings, resource, token, role, lock, drain, help\n", model.Quote(args[0]))
		return 2
	}
}

// knownHosts prints pinned known_hosts lines: every proxy's plain host key
// for the address users reach it by, and the plain host key of every agent
// serving an ssh resource the user may reach, under the resource's name.
// They are for SSH clients that cannot trust a host CA (paramiko,
// libssh2, PuTTY without a CA file); the list comes over this connection,
// whose host certificate the client checked.
func (c Commands) knownHosts(id access.Identity, stdout io.Writer) {
	fmt.Fprintln(stdout, "# Warren pinned host keys, for SSH clients without certificate support.")
	fmt.Fprintln(stdout, "# Clients that can should trust the CAs instead (known_hosts, known_hosts_resources): pinned keys change when agents join again.")
	for _, st := range c.P.Status() {
		if st.HostKey == "" || st.UserAddr == "" {
			continue
		}
		for _, k := range strings.Split(st.HostKey, "\n") {
			fmt.Fprintf(stdout, "%s %s\n", knownHostsPattern(st.UserAddr), k)
		}
	}
	snap := c.P.Snapshot()
	keys := map[string]string{}
	for _, r := range snap.Routes {
		keys[r.ID] = r.HostKey
	}
	see := snap.Policy.Seer(id)
	for _, s := range snap.List() {
		if s.Kind != "ssh" {
			continue
		}
		seen := map[string]bool{}
		for _, e := range snap.Lookup(s.Name) {
			if k := keys[e.AgentID]; k != "" && see(session.Target(e)) && !seen[k] {
				seen[k] = true
				for _, line := range strings.Split(k, "\n") {
					fmt.Fprintf(stdout, "%s %s\n", s.Name, line)
				}
			}
		}
	}
}

// knownHostsPattern is how known_hosts names host:port.
func knownHostsPattern(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "22" {
		return host
	}
	return "[" + host + "]:" + port
}

func (c Commands) whoami(id usersh.Identity, stdout io.Writer) {
	pol := c.P.Snapshot().Policy
	fmt.Fprintf(stdout, "user: %s\nlogins: %s\n", id.User, strings.Join(id.Logins, ","))
	for _, r := range id.Roles {
		role, ok := pol.Role(r)
		switch {
		case !ok:
			fmt.Fprintf(stdout, "role: %s (does not exist in this cluster: grants nothing)\n", r)
		case role.Description != "":
			fmt.Fprintf(stdout, "role: %s (%s)\n", r, role.Description)
		default:
			fmt.Fprintf(stdout, "role: %s\n", r)
		}
	}
	if !id.ValidUntil.IsZero() {
		fmt.Fprintf(stdout, "valid until: %s\n", id.ValidUntil.UTC().Format(time.RFC3339))
	}
}

// ls lists the resources the user may reach, and nothing else.
func (c Commands) ls(id access.Identity, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	list := c.visible(id, c.P.Snapshot().List())
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(list); err != nil {
			return 1
		}
		return 0
	}
	WriteResourceTable(stdout, list)
	return 0
}

// visible filters a listing to what id may see: a resource is listed when
// one of its endpoints is (agents serving one name may label it apart).
func (c Commands) visible(id access.Identity, list []model.Summary) []model.Summary {
	snap := c.P.Snapshot()
	see := snap.Policy.Seer(id)
	out := list[:0:0]
	for _, s := range list {
		for _, e := range snap.Lookup(s.Name) {
			if see(session.Target(e)) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// WriteResourceTable prints resources as an aligned table.
func WriteResourceTable(w io.Writer, list []model.Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATUS\tAGENTS\tLABELS")
	for _, s := range list {
		status := s.Status
		if s.Detail != "" {
			status += " (" + s.Detail + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", s.Name, s.Kind, status, s.Healthy, s.Agents, joinLabels(s.Labels))
	}
	tw.Flush()
}

// WriteAuditNotes says what a query's events leave out: older events past
// the limit, records that could not be read. It writes to w, kept apart from
// the events so that --json output stays JSON lines.
func WriteAuditNotes(w io.Writer, res audit.Result) {
	if res.Truncated {
		fmt.Fprintf(w, "(showing the newest %d of more events; use --limit)\n", len(res.Events))
	}
	if res.Skipped > 0 {
		fmt.Fprintf(w, "(skipped %d damaged records)\n", res.Skipped)
	}
}

// WriteAudit prints audit events as a table or JSON lines.
func WriteAudit(w io.Writer, evs []audit.Event, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, ev := range evs {
			_ = enc.Encode(ev)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tSESSION\tUSER\tLOGIN\tRESOURCE\tAGENT\tCLIENT\tIN\tOUT\tOUTCOME")
	for _, ev := range evs {
		outcome := ev.Outcome
		if ev.Error != "" {
			outcome += ": " + ev.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Type, short(ev.SessionID), dash(ev.User), dash(ev.Login), dash(ev.Resource), dash(ev.AgentID), dash(ev.ClientAddr), ev.BytesIn, ev.BytesOut, outcome)
	}
	tw.Flush()
}

// joinLabels renders labels as k=v pairs, sorted by key.
func joinLabels(labels map[string]string) string {
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return dash(id)
}
