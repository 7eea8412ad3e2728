// Command warren is Warren's one binary: the proxy, the agent, the
// cluster tools and the client. It parses flags and wires packages
// together; the work happens in actors/, cluster/, transport/, storage/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"init", "create the cluster's certificate authorities and a join token", runInit},
		{"user", "issue a user certificate: `warren user add NAME --logins root,ubuntu --roles access`", runUser},
		{"proxy", "run a proxy: `warren proxy --config proxy.yaml`", runProxy},
		{"agent", "run an agent: `warren agent --config agent.yaml`", runAgent},
		{"dev", "run a whole local cluster on embedded defaults", runDev},
		{"ls", "list resources", runLs},
		{"ssh", "open an SSH session to a resource: `warren ssh [login@]resource [command]`", runSSH},
		{"audit", "show the audit log: `warren audit --since 1h`", runAudit},
		{"resource", "manage dynamic resources: `warren resource create -f res.yaml`, `rm NAME`, `ls`", runResource},
		{"token", "manage join tokens: `warren token add --ttl 30m --resources 'web-*'`, `ls`, `rm ID`", runToken},
		{"role", "manage roles: `warren role create -f dev.yaml`, `ls`, `rm NAME`", runRole},
		{"lock", "lock out a user, agent or token everywhere: `warren lock user alice`, `ls`, `rm KIND NAME`", runLock},
		{"status", "show the proxy cluster: members, regions, agents, routes, peer links", runStatus},
		{"config", "print client configuration: `warren config ssh`", runConfig},
		{"sftp-server", "serve SFTP on stdin/stdout (used by the agent's SSH server)", runSFTPServer},
		{"bench", "measure Warren against OpenSSH bastions and at scale: `warren bench path`", runBench},
		{"version", "print the version", runVersion},
	}
}

// usageError is a mistake in how a command was called; main prints it
// with a hint instead of a bare error.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:])
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.As(err, new(exitError)):
				return int(err.(exitError))
			}
			var ue usageError
			if errors.As(err, &ue) {
				fmt.Fprintf(stderr, "warren %s: %s (see `warren %s --help`)\n", c.name, ue.msg, c.name)
				return 2
			}
			fmt.Fprintf(stderr, "warren %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "warren: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// flagsFirst reorders args so that flags (with their values) come before
// the positional arguments, which keep their order.
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !(ok && b.IsBoolFlag()) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if len(rest) == 0 {
		return flags
	}
	return append(append(flags, "--"), rest...)
}

// exitError carries a remote command's exit status.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "warren: an identity-aware access proxy for SSH and TCP services\n\nUsage: warren COMMAND [flags]\n\nCommands:")
	cs := append([]command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `warren COMMAND --help` for a command's flags.")
}

// newFlags returns a flag set whose usage names the command.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("warren "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: warren %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// logFlags adds --debug and --log-format and returns a function that
// builds the logger from them.
func logFlags(fs *flag.FlagSet) func() *slog.Logger {
	debug := fs.Bool("debug", false, "log debug messages")
	format := fs.String("log-format", "text", "log format: text or json")
	return func() *slog.Logger {
		level := slog.LevelInfo
		if *debug {
			level = slog.LevelDebug
		}
		opts := &slog.HandlerOptions{Level: level}
		if strings.EqualFold(*format, "json") {
			return slog.New(slog.NewJSONHandler(os.Stderr, opts))
		}
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
}

// parse parses flags and turns flag errors into usage errors. Flags may
// come before or after the positional arguments (`warren lock user bob
// --ttl 1h`), as people type them; "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) error {
	return parseArgs(fs, flagsFirst(fs, args))
}

// parseUntilCommand parses flags up to the first positional argument only:
// what follows is a command for elsewhere (`warren ssh node1 ls -la`).
func parseUntilCommand(fs *flag.FlagSet, args []string) error { return parseArgs(fs, args) }

func parseArgs(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
