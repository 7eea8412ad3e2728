package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// The administration commands run on a proxy, as the caller (who needs a
// role that allows admin): the proxy stores what they make in the cluster's
// replicated configuration.

func runToken(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"token needs a subcommand: add, ls, rm ID"}
	}
	fs := newFlags("token "+args[0], subSynopsis("token", args[0]))
	cf := addClientFlags(fs)
	ttl := fs.Duration("ttl", 30*time.Minute, "add: how long the token may be used to join (1s to 720h)")
	uses := fs.Int("uses", 0, "add: how many agents may join with it (0: any number until it expires)")
	resources := fs.String("resources", "", "add: resource name globs the joining agents may serve, comma-separated (empty: only names no other agent serves)")
	labels := fs.String("labels", "", "add: labels stamped on every resource the joining agents serve (k=v,k2=v2)")
	renewFor := fs.Duration("renew-for", 90*24*time.Hour, "add: how long after joining an agent's certificate is renewed (then it joins again)")
	asJSON := fs.Bool("json", false, "ls: print JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "add":
		if fs.NArg() > 0 {
			return usageError{"token add takes flags only"}
		}
		for _, v := range []string{*resources, *labels} {
			if strings.ContainsAny(v, " \t\n'\"") {
				return usageError{fmt.Sprintf("%q: resource globs and labels hold no spaces or quotes", v)}
			}
		}
		cmd := fmt.Sprintf("token add --ttl %s --uses %d --renew-for %s", *ttl, *uses, *renewFor)
		if *resources != "" {
			cmd += " --resources " + *resources
		}
		if *labels != "" {
			cmd += " --labels " + *labels
		}
		return cf.proxyCommand(ctx, cmd, os.Stdout)
	case "ls":
		return cf.proxyCommand(ctx, "token ls"+jsonFlag(*asJSON), os.Stdout)
	case "rm":
		if fs.NArg() != 1 {
			return usageError{"token rm needs one token ID (from `warren token ls`)"}
		}
		return cf.proxyCommand(ctx, "token rm "+fs.Arg(0), os.Stdout)
	}
	return usageError{fmt.Sprintf("unknown token subcommand %q: use add, ls or rm", args[0])}
}

func runRole(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"role needs a subcommand: create -f role.yaml, ls, rm NAME"}
	}
	fs := newFlags("role "+args[0], subSynopsis("role", args[0]))
	cf := addClientFlags(fs)
	file := fs.String("f", "", "create: the role (YAML: name, allow, deny, max_cert_ttl); - for stdin")
	asJSON := fs.Bool("json", false, "ls: print JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "create":
		in, closeIn, err := openInput(*file)
		if err != nil {
			return err
		}
		defer closeIn()
		return cf.proxyCommandInput(ctx, "role create", in, os.Stdout)
	case "ls":
		return cf.proxyCommand(ctx, "role ls"+jsonFlag(*asJSON), os.Stdout)
	case "rm":
		if fs.NArg() != 1 {
			return usageError{"role rm needs one role name"}
		}
		return cf.proxyCommand(ctx, "role rm "+fs.Arg(0), os.Stdout)
	}
	return usageError{fmt.Sprintf("unknown role subcommand %q: use create, ls or rm", args[0])}
}

func runLock(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"lock needs a subcommand: user NAME, agent ID, token ID, ls, rm KIND NAME"}
	}
	fs := newFlags("lock "+args[0], subSynopsis("lock", args[0]))
	cf := addClientFlags(fs)
	ttl := fs.Duration("ttl", 0, "user/agent/token: end the lock after this long (0: until warren lock rm)")
	message := fs.String("message", "", "user/agent/token: told to the locked party (at most 256 bytes)")
	asJSON := fs.Bool("json", false, "ls: print JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "user", "agent", "token":
		if fs.NArg() != 1 {
			return usageError{fmt.Sprintf("lock %s needs one name", args[0])}
		}
		cmd := fmt.Sprintf("lock %s --ttl %s %s", args[0], *ttl, fs.Arg(0))
		return cf.proxyCommandInput(ctx, cmd, strings.NewReader(*message), os.Stdout)
	case "ls":
		return cf.proxyCommand(ctx, "lock ls"+jsonFlag(*asJSON), os.Stdout)
	case "rm":
		if fs.NArg() != 2 {
			return usageError{"lock rm needs KIND NAME, as `warren lock ls` shows them"}
		}
		return cf.proxyCommand(ctx, "lock rm "+fs.Arg(0)+" "+fs.Arg(1), os.Stdout)
	}
	return usageError{fmt.Sprintf("unknown lock subcommand %q: use user, agent, token, ls or rm", args[0])}
}

func jsonFlag(on bool) string {
	if on {
		return " --json"
	}
	return ""
}

// openInput opens a file named by -f, or stdin for "-".
func openInput(file string) (io.Reader, func(), error) {
	switch file {
	case "":
		return nil, nil, usageError{"give the definition with -f FILE (or -f - for stdin)"}
	case "-":
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
