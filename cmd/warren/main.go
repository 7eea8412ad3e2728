// Command warren is Warren's one binary: the proxy, the agent, the
// cluster tools and the client. It parses flags and wires packages
// together; the work happens in actors/, cluster/, transport/, storage/.
package main

import (
	"cmp"
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
	"text/tabwriter"

	"github.com/warren-proxy/warren/internal/conf"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

// subcommand is a second-level command (`warren resource ls`): its name,
// the arguments it takes and what it does. `warren resource --help` lists
// them; each shows its own flags under `warren resource ls --help`.
type subcommand struct{ name, args, summary string }

var (
	commands    []command
	subcommands map[string][]subcommand // by command name
)

func init() {
	commands = []command{
		{"init", "create the cluster's certificate authorities and a join token", runInit},
		{"user", "issue a user certificate: `warren user add NAME --logins root,ubuntu --roles access`", runUser},
		{"proxy", "run a proxy: `warren proxy --config proxy.yaml`; drain a running one (as SIGTERM does): `warren proxy drain --proxy HOST:PORT`", runProxy},
		{"agent", "run an agent: `warren agent --config agent.yaml`", runAgent},
		{"dev", "run a whole local cluster on embedded defaults: `warren dev --dir ./warren-dev`", runDev},
		{"ls", "list resources", runLs},
		{"ssh", "open an SSH session to a resource: `warren ssh [login@]resource [command]`", runSSH},
		{"audit", "show the audit log: `warren audit --since 1h`", runAudit},
		{"recordings", "list session recordings, or write one out: `warren recordings ls --since 24h`, `get ID > s.cast`", runRecordings},
		{"play", "play a session recording on the terminal: `warren play ID [--speed 2]`", runPlay},
		{"resource", "manage dynamic resources: `warren resource create -f res.yaml`, `rm NAME`, `ls`", runResource},
		{"token", "manage join tokens: `warren token add --ttl 30m --resources 'web-*'`, `ls`, `rm ID`", runToken},
		{"role", "manage roles: `warren role create -f dev.yaml`, `ls`, `rm NAME`", runRole},
		{"lock", "lock out a user, agent or token everywhere: `warren lock user alice`, `ls`, `rm KIND NAME`", runLock},
		{"status", "show the proxy cluster: members, regions, agents, routes, peer links", runStatus},
		{"config", "print client configuration: `warren config ssh`", runConfig},
		{"connect", "relay ssh to the nearest ready proxy (an ssh ProxyCommand, see `warren config ssh --connect`)", runConnect},
		{"known-hosts", "print pinned known_hosts lines for SSH clients without certificate support", runKnownHosts},
		{"sftp-server", "serve SFTP on stdin/stdout (used by the agent's SSH server)", runSFTPServer},
		{"bench", "measure Warren against OpenSSH bastions and at scale: `warren bench path`", runBench},
		{"version", "print the version", runVersion},
	}
	subcommands = map[string][]subcommand{
		"user": {
			{"add", "NAME --logins L1,L2 --roles R1,R2 [--ttl 8h] [--key-type ed25519|ecdsa] [--data-dir DIR] [--out DIR]", "sign a certificate for NAME with the cluster's user CA"},
		},
		"resource": {
			{"create", "-f FILE", "create or replace a resource (YAML: name, kind, addr, labels, selector; - for stdin)"},
			{"rm", "NAME", "delete a resource"},
			{"ls", "[--json]", "list the dynamic resources"},
		},
		"token": {
			{"add", "[--ttl 30m] [--uses N] [--resources 'web-*,db-1'] [--labels k=v] [--renew-for 2160h]", "make a join token, printed once"},
			{"ls", "[--json]", "list the join tokens"},
			{"rm", "ID", "delete a join token"},
		},
		"role": {
			{"create", "-f FILE", "create or replace a role (YAML: name, allow, deny, max_cert_ttl; - for stdin)"},
			{"ls", "[--json]", "list the preset and stored roles"},
			{"rm", "NAME", "delete a role"},
		},
		"lock": {
			{"user", "NAME [--ttl 1h] [--message TEXT]", "refuse a user on every proxy and end their sessions"},
			{"agent", "ID [--ttl 1h] [--message TEXT]", "refuse an agent's tunnels on every proxy"},
			{"token", "ID [--ttl 1h] [--message TEXT]", "refuse a join token and the agents that joined with it"},
			{"ls", "[--json]", "list the locks"},
			{"rm", "KIND NAME", "remove a lock"},
		},
		"recordings": {
			{"ls", "[--user U] [--resource R] [--session ID] [--since 24h|2026-12-01] [--limit N] [--local] [--json]", "list the session recordings of every proxy, newest first"},
			{"get", "ID", "write a recording (asciicast v2, for `asciinema play`) to stdout"},
		},
		"config": {
			{"ssh", "[--write FILE] [--hosts 'node1 node2'] [--connect [--region R]]", "print an ssh_config block for stock OpenSSH (an entry per proxy region; with --connect, resources through the nearest ready proxy), or update it in a file"},
		},
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
			subs := subcommands[c.name]
			if len(subs) > 0 && len(args) > 1 && isHelp(args[1]) {
				commandUsage(stderr, c, subs)
				return 0
			}
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
				name := c.name
				for _, sc := range subs {
					if len(args) > 1 && args[1] == sc.name {
						name += " " + sc.name
					}
				}
				fmt.Fprintf(stderr, "warren %s: %s (see `warren %s --help`)\n", c.name, ue.msg, name)
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
	fmt.Fprintln(w, "\nRun `warren COMMAND --help` for a command's flags and subcommands.")
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// commandUsage lists a command's subcommands.
func commandUsage(w io.Writer, c command, subs []subcommand) {
	fmt.Fprintf(w, "Usage: warren %s SUBCOMMAND [flags]\n\n%s.\n\nSubcommands:\n", c.name, upperFirst(c.summary))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, sc := range subs {
		fmt.Fprintf(tw, "  %s %s\t%s\n", sc.name, sc.args, sc.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun `warren %s SUBCOMMAND --help` for its flags.\n", c.name)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// newFlags returns a flag set whose usage names the command, says what it
// does and lists its flags.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("warren "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n", strings.TrimSpace("warren "+name+" "+synopsis))
		if s := summary(name); s != "" {
			fmt.Fprintf(w, "\n%s.\n", upperFirst(s))
		}
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(w, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// subSynopsis is the arguments subcommand sub of cmd takes, as the
// subcommands table has them ("" for one it does not know: the command
// then reports it).
func subSynopsis(cmd, sub string) string {
	for _, sc := range subcommands[cmd] {
		if sc.name == sub {
			return sc.args
		}
	}
	return ""
}

// summary is what a command ("status") or subcommand ("resource ls")
// does, or "" for a name it does not know.
func summary(name string) string {
	cmd, sub, _ := strings.Cut(name, " ")
	if sub != "" {
		for _, sc := range subcommands[cmd] {
			if sc.name == sub {
				return sc.summary
			}
		}
		return ""
	}
	for _, c := range commands {
		if c.name == cmd {
			return c.summary
		}
	}
	return ""
}

// logFlags adds --debug, --log-format and --log-level and returns a
// function that builds the logger from them and the config file's log
// section (the flags win where given), refusing a format or level it
// does not know.
func logFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	lf := addLogFlags(fs)
	return func() (*slog.Logger, error) {
		l, _, err := lf.build(conf.Log{})
		return l, err
	}
}

// logOptions are the log flags of a command with a config file, whose log
// section they override where given.
type logOptions struct {
	debug             *bool
	format, levelName *string
}

func addLogFlags(fs *flag.FlagSet) *logOptions {
	return &logOptions{
		debug:     fs.Bool("debug", false, "log debug messages (as --log-level debug)"),
		format:    fs.String("log-format", "", "log format: text (default) or json; overrides the config's log.format"),
		levelName: fs.String("log-level", "", "log level: debug, info (default), warn or error; overrides the config's log.level"),
	}
}

// check refuses a --log-format or --log-level that does not exist, before
// the config file is read.
func (o *logOptions) check() error {
	if *o.format != "" {
		if _, err := conf.ParseLogFormat(*o.format); err != nil {
			return usageError{fmt.Sprintf("unknown --log-format %q: use text or json", *o.format)}
		}
	}
	if _, _, err := o.level(conf.Log{}); err != nil {
		return err
	}
	return nil
}

// build returns the logger for the config's log section, and its level,
// which a reload may change (level).
func (o *logOptions) build(file conf.Log) (*slog.Logger, *slog.LevelVar, error) {
	if err := o.check(); err != nil {
		return nil, nil, err
	}
	f, err := conf.ParseLogFormat(cmp.Or(*o.format, file.Format))
	if err != nil {
		return nil, nil, err
	}
	lv, _, err := o.level(file)
	if err != nil {
		return nil, nil, err
	}
	level := new(slog.LevelVar)
	level.Set(lv)
	return conf.NewLogger(os.Stderr, f, level), level, nil
}

// level is the log level for the config's log section; fixed is true when
// a flag set it, so that the file's level does not apply.
func (o *logOptions) level(file conf.Log) (lv slog.Level, fixed bool, err error) {
	if *o.debug {
		return slog.LevelDebug, true, nil
	}
	if *o.levelName != "" {
		lv, err = conf.ParseLogLevel(*o.levelName)
		if err != nil {
			return 0, true, usageError{"--log-level: " + err.Error()}
		}
		return lv, true, nil
	}
	lv, err = conf.ParseLogLevel(file.Level)
	return lv, false, err
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
