package usercmd

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/recordings"
)

// RecordingProxy is what the recordings command needs of a proxy that
// keeps session recordings.
type RecordingProxy interface {
	// ClusterRecordings lists the recordings every live proxy holds,
	// merged newest first, each once.
	ClusterRecordings(q *clusterpb.RecordingQuery) (list []recordings.Meta, truncated bool, notes []string)
	// LocalRecordings lists this proxy's recordings only.
	LocalRecordings(q *clusterpb.RecordingQuery) (list []recordings.Meta, truncated bool, err error)
	// ReadRecording writes a recording (asciicast v2) from this proxy or
	// a live peer that holds it.
	ReadRecording(id string, w io.Writer) error
}

// MaxRecordingsLimit bounds what one recordings query returns.
const MaxRecordingsLimit = 10000

// recordingsCmd serves `recordings ls` and `recordings get ID`; the
// caller checked the user may (role option allow.recordings).
func (c Commands) recordingsCmd(args []string, stdout, stderr io.Writer) int {
	rp, ok := c.P.(RecordingProxy)
	if !ok {
		fmt.Fprintln(stderr, "warren: this proxy keeps no recordings")
		return 1
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "warren: recordings needs a subcommand: ls [--user U] [--resource R] [--since 24h|2026-12-01] or get ID")
		return 2
	}
	switch args[0] {
	case "ls":
		return c.recordingsLs(rp, args[1:], stdout, stderr)
	case "get":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "warren: recordings get takes exactly one recording id")
			return 2
		}
		if err := rp.ReadRecording(args[1], stdout); err != nil {
			fmt.Fprintln(stderr, "warren: "+err.Error())
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "warren: unknown recordings subcommand %s: use ls or get\n", model.Quote(args[0]))
	return 2
}

func (c Commands) recordingsLs(rp RecordingProxy, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("recordings ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.String("since", "24h", "how far back: a duration (24h) or a time (2026-12-01, 2026-12-01T10:00:00Z)")
	user := fs.String("user", "", "only this user's recordings")
	resource := fs.String("resource", "", "only recordings on this resource")
	sessionID := fs.String("session", "", "only the recordings of this session (the audit log's session id)")
	limit := fs.Int("limit", 100, "at most this many, the newest")
	local := fs.Bool("local", false, "only this proxy's recordings")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	from, err := ParseSince(*since, c.P.Now())
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "warren: --since: %v\n", err)
		return 2
	case *limit < 1 || *limit > MaxRecordingsLimit:
		fmt.Fprintf(stderr, "warren: --limit must be between 1 and %d\n", MaxRecordingsLimit)
		return 2
	case *user != "" && !access.ValidUser(*user):
		fmt.Fprintf(stderr, "warren: --user %s is not a user name\n", model.Quote(*user))
		return 2
	case *resource != "" && !model.ValidName(*resource):
		fmt.Fprintf(stderr, "warren: --resource: %v\n", model.CheckName("resource name", *resource))
		return 2
	case *sessionID != "" && !model.ValidName(*sessionID):
		fmt.Fprintf(stderr, "warren: --session %s is not a session id\n", model.Quote(*sessionID))
		return 2
	}
	q := &clusterpb.RecordingQuery{SinceUnixNano: from.UnixNano(), User: *user, Resource: *resource, Session: *sessionID, Limit: int32(*limit)}
	var list []recordings.Meta
	var truncated bool
	var notes []string
	if *local {
		list, truncated, err = rp.LocalRecordings(q)
		if err != nil {
			fmt.Fprintf(stderr, "warren: %v\n", err)
			return 1
		}
	} else {
		list, truncated, notes = rp.ClusterRecordings(q)
	}
	WriteRecordings(stdout, list, *asJSON)
	if truncated {
		fmt.Fprintf(stderr, "(showing the newest %d recordings; more match: narrow with --since, --user, --resource or raise --limit)\n", len(list))
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	return 0
}

// ParseSince reads --since: a duration back from now, or a time (RFC
// 3339, or a date in UTC).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, errors.New("a duration must be positive, like 24h")
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is neither a duration (24h) nor a time (2026-12-01 or 2026-12-01T10:00:00Z)", model.Quote(s))
}

// WriteRecordings prints recordings as a table or JSON lines.
func WriteRecordings(w io.Writer, list []recordings.Meta, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, m := range list {
			_ = enc.Encode(m)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tLOGIN\tRESOURCE\tSTART\tDURATION\tSIZE\tNOTES")
	for _, m := range list {
		var notes []string
		if m.Input {
			notes = append(notes, "input")
		}
		if m.Truncated {
			notes = append(notes, "stopped before the session ended (cap or spool)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, dash(m.User), dash(m.Login), dash(m.Resource),
			m.Start.UTC().Format(time.RFC3339), m.Duration.Round(time.Second), byteSize(m.Size), dash(strings.Join(notes, ", ")))
	}
	tw.Flush()
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
