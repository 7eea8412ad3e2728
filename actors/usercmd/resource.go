package usercmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
)

// MaxDefinition bounds a resource definition read from a user.
const MaxDefinition = 64 << 10

// resource serves `resource create|rm|ls`: dynamic resource definitions
// in the cluster's replicated configuration.
func (c Commands) resource(id access.Identity, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "warren: resource needs a subcommand: create (definition on stdin), rm NAME, ls")
		return 2
	}
	if d := c.P.Snapshot().Policy.Can(id, "admin"); args[0] != "ls" && !d.Allowed {
		fmt.Fprintln(stderr, "warren: "+d.Reason)
		return 1
	}
	switch args[0] {
	case "ls":
		snap := c.P.Snapshot()
		see := snap.Policy.Seer(id)
		var defs []model.Definition
		for _, d := range snap.Definitions {
			if see(access.Target{Name: d.Name, Kind: d.Kind, Labels: d.Labels}) {
				defs = append(defs, d)
			}
		}
		if len(args) > 1 && args[1] == "--json" {
			_ = json.NewEncoder(stdout).Encode(defs)
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND\tADDR\tLABELS\tSELECTOR")
		for _, d := range defs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Kind, dash(d.Addr), dash(joinLabels(d.Labels)), dash(d.Selector))
		}
		tw.Flush()
		return 0
	case "create":
		data, err := io.ReadAll(io.LimitReader(stdin, MaxDefinition+1))
		if err != nil || len(data) > MaxDefinition {
			fmt.Fprintf(stderr, "warren: read the definition: send at most %d bytes of YAML on stdin\n", MaxDefinition)
			return 2
		}
		var d model.Definition
		if err := conf.Decode(data, &d); err != nil {
			fmt.Fprintf(stderr, "warren: resource definition: %v\n", err)
			return 2
		}
		if err := d.Validate(); err != nil {
			fmt.Fprintf(stderr, "warren: resource definition refused, nothing stored:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
			return 2
		}
		if err := c.P.PutDefinition(&router.PutDefinition{Definition: d}); err != nil {
			fmt.Fprintf(stderr, "warren: store resource %q: %v\n", d.Name, err)
			return 1
		}
		fmt.Fprintf(stdout, "resource %q stored; agents whose watchers match it will serve it\n", d.Name)
		return 0
	case "rm":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "warren: usage: resource rm NAME")
			return 2
		}
		name, found := args[1], false
		for _, d := range c.P.Snapshot().Definitions {
			found = found || d.Name == name
		}
		if !found {
			fmt.Fprintf(stderr, "warren: no dynamic resource named %q (static resources live in agents' configs)\n", name)
			return 1
		}
		if err := c.P.PutDefinition(&router.PutDefinition{Definition: model.Definition{Name: name}, Delete: true}); err != nil {
			fmt.Fprintf(stderr, "warren: remove resource %q: %v\n", name, err)
			return 1
		}
		fmt.Fprintf(stdout, "resource %q removed\n", name)
		return 0
	}
	fmt.Fprintf(stderr, "warren: unknown resource subcommand %q: use create, rm or ls\n", args[0])
	return 2
}
