package usercmd

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/warren-proxy/warren/internal/model"
)

// WriteStatus prints member statuses as a table or JSON.
func WriteStatus(w io.Writer, sts model.Statuses, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(w).Encode(sts)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tREGION\tZONE\tSTATE\tAGENTS\tROUTES\tPEER LINK")
	for _, s := range sts {
		link := s.Link
		if s.Link == "ok" {
			link = fmt.Sprintf("ok (%.2f ms)", s.RTTMillis)
		}
		agents, routes := fmt.Sprint(s.LocalAgents), fmt.Sprint(s.Routes)
		if s.Redacted {
			agents, routes = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Region, dash(s.Zone), s.State, agents, routes, link)
	}
	tw.Flush()
}
