package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/warren-proxy/warren/internal/connect"
)

// runConnect is an ssh ProxyCommand: it picks the nearest ready proxy
// (internal/connect) and relays stdin and stdout to its user port, so the
// ssh client authenticates to that proxy itself, as with a plain HostName.
func runConnect(ctx context.Context, args []string) error {
	fs := newFlags("connect", "--proxies FILE [--region R] [--state FILE]")
	proxies := fs.String("proxies", "", "the proxies `FILE` to choose from, written by warren config ssh --connect: ID REGION USER_ADDR [HTTP_ADDR] per line")
	region := fs.String("region", "", "prefer the proxies of `REGION`; others are used only when none of them is ready")
	state := fs.String("state", "", "the `FILE` keeping the choice and recent round trips (default: connect.state beside the proxies file)")
	timeout := fs.Duration("timeout", connect.DefaultTimeout, "how long to wait for the proxies to answer")
	debug := fs.Bool("debug", false, "say which proxy was chosen and why, and what every probe found")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *proxies == "":
		return usageError{"--proxies FILE is required (run `warren config ssh --connect` to write it)"}
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("unexpected argument %q: warren connect takes flags only", fs.Arg(0))}
	case *region != "":
		if err := connect.CheckRegion(*region); err != nil {
			return usageError{err.Error()}
		}
	}
	if *timeout <= 0 {
		return usageError{"--timeout must be positive"}
	}
	cands, err := connect.ReadProxies(*proxies)
	if err != nil {
		return err
	}
	if *state == "" {
		*state = filepath.Join(filepath.Dir(*proxies), "connect.state")
	}
	conn, out, err := connect.Connect(ctx, connect.Config{Candidates: cands, Region: *region, StatePath: *state, Timeout: *timeout})
	if *debug {
		for _, c := range cands {
			r := out.Results[c.ID]
			fmt.Fprintf(os.Stderr, "warren connect: %s (%s, %s): rtt %s err %v not-ready %q\n", c.ID, c.Region, c.UserAddr, r.RTT, r.Err, r.NotReady)
		}
		if out.StateErr != nil {
			fmt.Fprintf(os.Stderr, "warren connect: state: %v\n", out.StateErr)
		}
		if err == nil {
			fmt.Fprintf(os.Stderr, "warren connect: chose %s: %s\n", out.Decision.Order[0].ID, out.Decision.Why)
		}
	}
	if err != nil {
		return err
	}
	if out.Decision.OutsideRegion {
		fmt.Fprintf(os.Stderr, "warren connect: no proxy of region %s is ready; using %s in region %s\n", *region, out.Decision.Order[0].ID, out.Decision.Order[0].Region)
	}
	return connect.Relay(ctx, conn, os.Stdin, os.Stdout)
}
