package usercmd

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
)

// audit serves the audit command: the whole cluster's records, newest
// first, filtered by user and resource.
func (c Commands) audit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.Duration("since", time.Hour, "how far back")
	limit := fs.Int("limit", 1000, "at most this many events, the newest")
	user := fs.String("user", "", "only this user's events")
	resource := fs.String("resource", "", "only this resource's events")
	local := fs.Bool("local", false, "only this proxy's log")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *limit < 1 || *limit > MaxAuditLimit:
		fmt.Fprintf(stderr, "warren: --limit must be between 1 and %d\n", MaxAuditLimit)
		return 2
	case *since <= 0:
		fmt.Fprintln(stderr, "warren: --since must be positive, like 1h")
		return 2
	case *user != "" && !access.ValidUser(*user):
		fmt.Fprintf(stderr, "warren: --user %s is not a user name\n", model.Quote(*user))
		return 2
	case *resource != "" && !model.ValidName(*resource):
		fmt.Fprintf(stderr, "warren: --resource: %v\n", model.CheckName("resource name", *resource))
		return 2
	}
	q := &clusterpb.AuditQuery{SinceUnixNano: c.P.Now().Add(-*since).UnixNano(), User: *user, Resource: *resource, Limit: int32(*limit)}
	var evs []audit.Event
	var truncated bool
	var notes []string
	if *local {
		r := c.P.LocalAudit(q)
		if r.Error != "" {
			fmt.Fprintf(stderr, "warren: read audit log: %s\n", r.Error)
			return 1
		}
		for _, b := range r.Events {
			var ev audit.Event
			if json.Unmarshal(b, &ev) == nil {
				evs = append(evs, ev)
			}
		}
		truncated = r.Truncated
		if r.Skipped > 0 {
			notes = append(notes, fmt.Sprintf("(skipped %d damaged records)", r.Skipped))
		}
	} else {
		evs, truncated, notes = c.P.ClusterAudit(q)
	}
	WriteAudit(stdout, evs, *asJSON)
	if truncated {
		fmt.Fprintf(stderr, "(showing the newest %d events; more match: narrow with --since, --user, --resource or raise --limit)\n", len(evs))
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	return 0
}
