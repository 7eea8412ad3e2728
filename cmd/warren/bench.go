package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/warren-proxy/warren/bench"
)

// runBench is the front end of package bench.
func runBench(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "fleet" {
		return bench.RunFleet(ctx, args[1:], os.Stdout)
	}
	scenarios := bench.Scenarios()
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.Name
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") || isHelp(args[0]) {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage: warren bench SCENARIO [--tiny] [--out DIR] [flags]\n\nScenarios:\n")
		for _, s := range scenarios {
			fmt.Fprintf(&b, "  %-24s %s\n", s.Name, s.Summary)
		}
		fmt.Fprintf(&b, "  %-24s %s\n", "all", "every scenario, one after the other")
		fmt.Fprintf(&b, "\nRun `warren bench SCENARIO --help` for its flags.")
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprintln(os.Stderr, b.String())
			return nil
		}
		return usageError{"name a scenario\n\n" + b.String()}
	}
	name, rest := args[0], args[1:]
	run := scenarios
	if name != "all" {
		i := slices.Index(names, name)
		if i < 0 {
			return usageError{fmt.Sprintf("unknown scenario %q; scenarios: %s, all", name, strings.Join(names, ", "))}
		}
		run = scenarios[i : i+1]
	}
	// --tiny picks the defaults, so look for it before parsing.
	tiny := slices.Contains(rest, "--tiny") || slices.Contains(rest, "-tiny")
	fs := newFlags("bench "+name, "[--tiny] [--out DIR] [--dir DIR] [scenario flags]")
	fs.Bool("tiny", false, "a tiny configuration that only checks the scenario runs (what CI does)")
	out := fs.String("out", "", "also write CSV tables and PNG plots to this directory")
	dir := fs.String("dir", "", "scratch directory for configs, data and logs (default: a temporary one, removed after)")
	bin := fs.String("binary", "", "warren binary to run proxies and agents with (default: this one)")
	runs := make([]func(context.Context, bench.Env) (bench.Report, error), len(run))
	if name == "all" {
		// Scenarios' flags overlap (--round-trips, --window): `all` runs
		// each with its defaults; tune one by running it alone.
		for i, s := range run {
			own := newFlags("bench "+s.Name, "")
			runs[i] = s.Flags(own, tiny)
			if err := own.Parse(nil); err != nil {
				return err
			}
		}
	} else {
		runs[0] = run[0].Flags(fs, tiny)
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	env := bench.Env{Binary: *bin, Dir: *dir, Progress: os.Stderr}
	if env.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		env.Binary = exe
	}
	if env.Dir == "" {
		tmp, err := os.MkdirTemp("", "warren-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		env.Dir = tmp
	}
	for i, s := range run {
		start := time.Now()
		fmt.Fprintf(os.Stderr, "warren bench %s: starting (scratch in %s)\n", s.Name, env.Dir)
		rep, err := runs[i](ctx, env)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		rep.Markdown(os.Stdout)
		fmt.Printf("_%s took %s; command: `warren bench %s`_\n\n", s.Name, time.Since(start).Round(time.Second), strings.Join(args, " "))
		if *out != "" {
			paths, err := rep.WriteFiles(*out)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "wrote %s\n", strings.Join(paths, ", "))
		}
	}
	return nil
}
