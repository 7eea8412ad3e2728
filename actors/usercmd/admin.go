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

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/model"
)

// admin serves the cluster administration commands (the caller checked
// the admin role): token, role and lock.
func (c Commands) admin(user string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintf(stderr, "warren: %s needs a subcommand (see `warren %s --help`)\n", args[0], args[0])
		return 2
	}
	var err error
	switch args[0] + " " + args[1] {
	case "token add":
		err = c.tokenAdd(user, args[2:], stdout, stderr)
	case "token ls":
		err = c.tokenLs(args[2:], stdout)
	case "token rm":
		err = c.configRm(args[2:], router.PrefixToken, "token", access.ValidTokenID, stdout)
	case "role create":
		err = c.roleCreate(stdin, stdout)
	case "role ls":
		err = c.roleLs(args[2:], stdout)
	case "role rm":
		err = c.roleRm(args[2:], stdout)
	case "lock user", "lock agent", "lock token":
		err = c.lock(user, args[1], args[2:], stdin, stdout, stderr)
	case "lock ls":
		err = c.lockLs(args[2:], stdout)
	case "lock rm":
		err = c.unlock(args[2:], stdout)
	default:
		err = usage(fmt.Sprintf("unknown subcommand %s %s", args[0], model.Quote(args[1])))
	}
	var u usageErr
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		fmt.Fprintln(stderr, "warren: "+u.msg)
		return 2
	default:
		fmt.Fprintln(stderr, "warren: "+err.Error())
		return 1
	}
}

type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usage(msg string) error { return usageErr{msg} }

// adminFlags parses a subcommand's flags; errors are usage errors.
func adminFlags(name string, args []string, stderr io.Writer, define func(fs *flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	define(fs)
	if err := fs.Parse(args); err != nil {
		return nil, usage(name + ": " + err.Error())
	}
	return fs, nil
}

func (c Commands) tokenAdd(user string, args []string, stdout, stderr io.Writer) error {
	var req access.TokenRequest
	var resources, labels string
	fs, err := adminFlags("token add", args, stderr, func(fs *flag.FlagSet) {
		fs.DurationVar(&req.TTL, "ttl", access.DefaultTokenTTL, "")
		fs.IntVar(&req.Uses, "uses", 0, "")
		fs.StringVar(&resources, "resources", "", "")
		fs.StringVar(&labels, "labels", "", "")
		fs.DurationVar(&req.RenewFor, "renew-for", access.DefaultRenewFor, "")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usage("token add takes no arguments, only flags")
	}
	for _, r := range strings.Split(resources, ",") {
		if r = strings.TrimSpace(r); r != "" {
			req.Resources = append(req.Resources, r)
		}
	}
	if req.Labels, err = parseLabels(labels); err != nil {
		return usage(err.Error())
	}
	if _, err = req.Validate(); err != nil {
		return usage("token refused, nothing stored:\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	secret, t, err := c.P.CreateToken(req, user)
	if err != nil {
		return err
	}
	uses := "until it expires"
	if t.Uses > 0 {
		uses = fmt.Sprintf("%d time(s), counted by proxy %s", t.Uses, t.Origin)
	}
	fmt.Fprintf(stdout, "%s\n", secret)
	fmt.Fprintf(stderr, "token %s: valid until %s, usable %s; agents that join with it serve %s and renew their certificates for %s.\nThe token is shown once; only its hash is stored. Revoke it with `warren token rm %s` (joined agents stay) or `warren lock token %s` (they go too).\n",
		t.ID, t.Expires.UTC().Format(time.RFC3339), uses, t.Grant.Describe(), t.RenewFor, t.ID, t.ID)
	return nil
}

// parseLabels reads "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("labels: %s is not key=value", model.Quote(part))
		}
		if err := model.CheckLabel(k, v); err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
		out[k] = v
	}
	return out, nil
}

func (c Commands) tokenLs(args []string, stdout io.Writer) error {
	now := c.P.Now()
	toks := c.P.Snapshot().Policy.Tokens()
	if len(args) > 0 && args[0] == "--json" {
		for i := range toks {
			toks[i].Hash = "" // never shown, even hashed
		}
		return json.NewEncoder(stdout).Encode(toks)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEXPIRES\tUSES\tGRANT\tRENEW FOR\tCREATED BY")
	for _, t := range toks {
		exp := t.Expires.UTC().Format(time.RFC3339)
		if !now.Before(t.Expires) {
			exp += " (expired)"
		}
		uses := fmt.Sprintf("%d", t.Used)
		if t.Uses > 0 {
			uses = fmt.Sprintf("%d/%d", t.Used, t.Uses)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, exp, uses, t.Grant.Describe(), t.RenewFor, dash(t.CreatedBy))
	}
	return tw.Flush()
}

// configRm deletes one entry by name after checking it exists.
func (c Commands) configRm(args []string, prefix, what string, valid func(string) bool, stdout io.Writer) error {
	if len(args) != 1 || !valid(args[0]) {
		return usage(fmt.Sprintf("%s rm needs one valid %s id", what, what))
	}
	name := args[0]
	if what == "token" {
		if _, ok := c.P.Snapshot().Policy.Token(name); !ok {
			return fmt.Errorf("no %s %s", what, name)
		}
	}
	if err := c.P.PutConfig(&router.PutConfig{Key: prefix + name, Delete: true}); err != nil {
		return fmt.Errorf("remove %s %s: %w", what, name, err)
	}
	fmt.Fprintf(stdout, "%s %s removed\n", what, name)
	return nil
}

func (c Commands) roleCreate(stdin io.Reader, stdout io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(stdin, access.MaxRoleBytes+1))
	if err != nil {
		return fmt.Errorf("read the role: %w", err)
	}
	r, err := access.ParseRole(data)
	if err != nil {
		return usage("role refused, nothing stored:\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	if err := c.P.Put(router.PrefixRole+r.Name, r); err != nil {
		return fmt.Errorf("store role %s: %w", r.Name, err)
	}
	fmt.Fprintf(stdout, "role %s stored; users whose certificates name it get it within seconds on every proxy\n", r.Name)
	return nil
}

func (c Commands) roleLs(args []string, stdout io.Writer) error {
	roles := c.P.Snapshot().Policy.Roles()
	if len(args) > 0 && args[0] == "--json" {
		return json.NewEncoder(stdout).Encode(roles)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tKIND\tALLOW\tDENY\tDESCRIPTION")
	for _, r := range roles {
		kind := "stored"
		if access.IsPreset(r.Name) {
			kind = "preset"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, kind, describeRules(r.Allow), describeRules(r.Deny), dash(r.Description))
	}
	return tw.Flush()
}

func describeRules(rs access.Rules) string {
	var parts []string
	if len(rs.Logins) > 0 {
		parts = append(parts, "logins="+strings.Join(rs.Logins, "|"))
	}
	if len(rs.Resources) > 0 {
		parts = append(parts, "resources="+rs.Resources.String())
	}
	if len(rs.Names) > 0 {
		parts = append(parts, "names="+strings.Join(rs.Names, "|"))
	}
	if len(rs.Ports) > 0 {
		parts = append(parts, "ports="+strings.Join(rs.Ports, "|"))
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{rs.PortForwarding, "port_forwarding"}, {rs.AgentForwarding, "agent_forwarding"}, {rs.Admin, "admin"}, {rs.Audit, "audit"}} {
		if f.on {
			parts = append(parts, f.name)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func (c Commands) roleRm(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usage("role rm needs one role name")
	}
	name := args[0]
	if access.IsPreset(name) {
		return usage(fmt.Sprintf("%s is a preset role; it cannot be removed", name))
	}
	if _, ok := c.P.Snapshot().Policy.Role(name); !ok {
		return fmt.Errorf("no role %s", model.Quote(name))
	}
	if err := c.P.PutConfig(&router.PutConfig{Key: router.PrefixRole + name, Delete: true}); err != nil {
		return fmt.Errorf("remove role %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "role %s removed; certificates that name it grant nothing by it from now on\n", name)
	return nil
}

// maxLockMessage bounds the message of a lock, read from stdin.
const maxLockMessage = 256

func (c Commands) lock(user, kind string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var ttl time.Duration
	fs, err := adminFlags("lock "+kind, args, stderr, func(fs *flag.FlagSet) {
		fs.DurationVar(&ttl, "ttl", 0, "")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usage(fmt.Sprintf("lock %s needs one %s name", kind, kind))
	}
	msg, err := io.ReadAll(io.LimitReader(stdin, maxLockMessage+1))
	if err != nil || len(msg) > maxLockMessage {
		return usage(fmt.Sprintf("send the lock's message (at most %d bytes) on stdin", maxLockMessage))
	}
	now := c.P.Now()
	l := access.Lock{Kind: kind, Name: fs.Arg(0), Message: strings.TrimSpace(string(msg)), Created: now, CreatedBy: user}
	if ttl < 0 || ttl > 365*24*time.Hour {
		return usage("--ttl must be between 0 (no end) and 8760h")
	}
	if ttl > 0 {
		l.Expires = now.Add(ttl)
	}
	if err := l.Validate(); err != nil {
		return usage(err.Error())
	}
	if err := c.P.Put(router.PrefixLock+kind+"/"+l.Name, l); err != nil {
		return fmt.Errorf("store the lock: %w", err)
	}
	fmt.Fprintf(stdout, "%s %s locked; every proxy refuses it and ends its sessions within seconds\n", kind, l.Name)
	return nil
}

func (c Commands) lockLs(args []string, stdout io.Writer) error {
	now := c.P.Now()
	locks := c.P.Snapshot().Policy.Locks()
	if len(args) > 0 && args[0] == "--json" {
		return json.NewEncoder(stdout).Encode(locks)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSINCE\tUNTIL\tBY\tMESSAGE")
	for _, l := range locks {
		until := "-"
		if !l.Expires.IsZero() {
			until = l.Expires.UTC().Format(time.RFC3339)
			if !l.Active(now) {
				until += " (ended)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Kind, l.Name, l.Created.UTC().Format(time.RFC3339), until, dash(l.CreatedBy), dash(l.Message))
	}
	return tw.Flush()
}

func (c Commands) unlock(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return usage("lock rm needs KIND NAME, as `warren lock ls` shows them")
	}
	kind, name := args[0], args[1]
	found := false
	for _, l := range c.P.Snapshot().Policy.Locks() {
		found = found || l.Kind == kind && l.Name == name
	}
	if !found {
		return fmt.Errorf("no lock on %s %s", model.Quote(kind), model.Quote(name))
	}
	if err := c.P.PutConfig(&router.PutConfig{Key: router.PrefixLock + kind + "/" + name, Delete: true}); err != nil {
		return fmt.Errorf("remove the lock: %w", err)
	}
	fmt.Fprintf(stdout, "%s %s unlocked\n", kind, name)
	return nil
}
