package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/bench"
)

// runEnv runs warren with extra environment for at most 30 s, with empty
// stdin, and returns its output and exit code.
func runEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, warrenBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("warren %s did not finish within 30s; stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// flagLine is a flag as flag.PrintDefaults shows it: "  -name ARG".
var flagLine = regexp.MustCompile(`(?m)^  -([A-Za-z0-9-]+)(?: ([^\t\n]*))?(?:\n|\t|$)`)

// argName reports whether name is an argument name PrintDefaults shows
// for a flag: a type, or an upper-case name given on purpose. Anything
// else came from a backticked phrase in the usage text (`-i warren user
// add`), which the flag package takes for the argument's name.
func argName(name string) bool {
	switch name {
	case "", "string", "int", "int64", "uint", "uint64", "float", "float64", "duration", "value":
		return true
	}
	return regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(name)
}

// TestHelp runs `warren CMD --help` for every command and `warren CMD SUB
// --help` for every subcommand: each prints its usage and exits 0, starts
// nothing, and shows every flag with a proper argument name.
func TestHelp(t *testing.T) {
	cases := [][]string{{"--help"}, {"-h"}, {"help"}, {"user", "-h"}, {"proxy", "-h"}, {"proxy", "drain", "--help"}}
	for _, c := range commands {
		cases = append(cases, []string{c.name, "--help"})
		for _, sc := range subcommands[c.name] {
			cases = append(cases, []string{c.name, sc.name, "--help"})
		}
	}
	for _, s := range bench.Scenarios() {
		cases = append(cases, []string{"bench", s.Name, "--help"})
	}
	cases = append(cases, []string{"bench", "all", "--help"}, []string{"bench", "fleet", "--help"})
	for _, args := range cases {
		name := strings.Join(args, " ")
		t.Run(name, func(t *testing.T) {
			out, errs, code := runEnv(t, nil, args...)
			all := out + errs
			if code != 0 {
				t.Errorf("warren %s: exit %d, want 0; output:\n%s", name, code, all)
			}
			if !strings.Contains(all, "Usage") {
				t.Errorf("warren %s: no Usage in the output:\n%s", name, all)
			}
			for _, m := range flagLine.FindAllStringSubmatch(all, -1) {
				if !argName(m[2]) {
					t.Errorf("warren %s: flag -%s is shown with the argument name %q: a backticked phrase in its usage text becomes the argument name; drop the backticks", name, m[1], m[2])
				}
			}
		})
	}
}

// TestCommandLineMistakes: each mistake is refused with one sentence that
// says what to do.
func TestCommandLineMistakes(t *testing.T) {
	empty := t.TempDir()
	damaged := filepath.Join(t.TempDir(), "auth")
	if _, errs, code := runEnv(t, nil, "init", "--data-dir", damaged); code != 0 {
		t.Fatalf("init: exit %d, stderr %q", code, errs)
	}
	if err := os.Remove(filepath.Join(damaged, "host_ca")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args    []string
		code    int
		want    []string
		notWant []string
	}{
		{
			args: []string{"proxy", "--log-format", "jsn", "--config", filepath.Join(empty, "proxy.yaml")},
			code: 2, want: []string{`unknown --log-format "jsn": use text or json`},
			notWant: []string{"proxy.yaml"}, // refused before the config is read
		},
		{
			args: []string{"agent", "--log-level", "loud", "--config", filepath.Join(empty, "agent.yaml")},
			code: 2, want: []string{`--log-level: unknown log level "loud": use debug, info, warn or error`},
			notWant: []string{"agent.yaml"}, // refused before the config is read
		},
		{
			// An empty directory holds no identity: user add says where it
			// looked and to pass --data-dir, never to init (a second CA).
			args: []string{"user", "add", "bob", "--logins", "x", "--roles", "access", "--data-dir", empty, "--out", empty},
			code: 1, want: []string{"no cluster identity in " + empty, "--data-dir"},
			notWant: []string{"init --data-dir", "create the cluster identity"},
		},
		{
			// A damaged one is not a missing one: it names what is missing.
			args: []string{"user", "add", "bob", "--logins", "x", "--roles", "access", "--data-dir", damaged, "--out", empty},
			code: 1, want: []string{"the cluster identity in " + damaged + " is incomplete (no host_ca)", "restore it"},
			notWant: []string{"init --data-dir"},
		},
		{
			args: []string{"user"},
			code: 2, want: []string{"warren user add NAME", "see `warren user --help`"},
		},
		{
			args: []string{"resource", "create"},
			code: 2, want: []string{"create needs -f FILE", "see `warren resource create --help`"},
		},
		{
			args: []string{"version", "extra"},
			code: 2, want: []string{"version takes no arguments"},
		},
	}
	for _, tc := range cases {
		out, errs, code := runEnv(t, nil, tc.args...)
		name := strings.Join(tc.args, " ")
		if code != tc.code {
			t.Errorf("warren %s: exit %d, want %d; stdout %q stderr %q", name, code, tc.code, out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("warren %s: stderr %q does not hold %q", name, errs, w)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(errs, w) {
				t.Errorf("warren %s: stderr %q holds %q", name, errs, w)
			}
		}
	}
}

// TestAuthDirDefaultsAgree: `warren init` writes where `warren user add`
// reads by default, the auth_dir of deploy/examples/proxy.yaml.
func TestAuthDirDefaultsAgree(t *testing.T) {
	def := regexp.MustCompile(`(?s)  -data-dir [^\n]*\n[^\n]*\(default "([^"]*)"\)`)
	var dirs []string
	for _, args := range [][]string{{"init", "--help"}, {"user", "add", "--help"}} {
		_, errs, _ := runEnv(t, nil, args...)
		m := def.FindStringSubmatch(errs)
		if m == nil {
			t.Fatalf("warren %s shows no --data-dir default:\n%s", strings.Join(args, " "), errs)
		}
		dirs = append(dirs, m[1])
	}
	example, err := os.ReadFile("../../deploy/examples/proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if dirs[0] != dirs[1] || !strings.Contains(string(example), "auth_dir: "+dirs[0]+" ") {
		t.Errorf("init writes to %s, user add reads %s; deploy/examples/proxy.yaml must have auth_dir: the same", dirs[0], dirs[1])
	}
}

// TestDevBannerAndCleanStop: the banner's commands work as printed (this
// binary's path, not a `warren` that may not be on PATH), it shows the
// HTTP address, and a SIGTERM stops the cluster without an ERROR line.
func TestDevBannerAndCleanStop(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "dev", "--dir", dir, "--user-port", "0", "--tunnel-port", "0", "--http-port", "0")
	waitFor(t, "dev cluster up", func() bool { return strings.Contains(p.stdout.String(), "is up") })
	banner := p.stdout.String()

	env := regexp.MustCompile(`export (WARREN_PROXY=\S+) (WARREN_IDENTITY=\S+)`).FindStringSubmatch(banner)
	if env == nil {
		t.Fatalf("the banner exports no WARREN_PROXY and WARREN_IDENTITY:\n%s", banner)
	}
	if !strings.Contains(banner, warrenBin+" ls") {
		t.Errorf("the banner does not run this binary (%s) for the client commands:\n%s", warrenBin, banner)
	}
	out, errs, code := runEnv(t, env[1:], "ls")
	if code != 0 || !strings.Contains(out, "node1") || !strings.Contains(out, "echo") {
		t.Errorf("the banner's `ls`: exit %d, stdout %q, stderr %q; want node1 and echo", code, out, errs)
	}

	m := regexp.MustCompile(`curl (http://\S+/healthz)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("the banner shows no HTTP address:\n%s", banner)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(m[1])
	if err != nil {
		t.Fatalf("GET %s: %v", m[1], err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s, want 200", m[1], resp.Status)
	}

	p.stop(t)
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("a clean stop logged an error: %s", line)
		}
	}
}

// TestDevPortClash: a dev cluster whose port is taken says how to pick
// other ports.
func TestDevPortClash(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_, errs, code := runEnv(t, nil, "dev", "--dir", t.TempDir(), "--user-port", port, "--tunnel-port", "0", "--http-port", "0")
	if code != 1 || !strings.Contains(errs, "address already in use") || !strings.Contains(errs, "--user-port 0") || !strings.Contains(errs, "--host") {
		t.Errorf("dev on a taken port: exit %d, stderr %q; want 1 and a hint to use --user-port 0 or another --host", code, errs)
	}
}

// TestProxyCleanStop: `warren proxy` and `warren agent`, as systemd runs
// them, stop on SIGTERM without an ERROR line.
func TestProxyCleanStop(t *testing.T) {
	_, proxyCfg, agentCfg, _ := writeCluster(t)
	px := start(t, "proxy", "--config", proxyCfg)
	waitFor(t, "proxy started", func() bool { return strings.Contains(px.stderr.String(), "proxy started") })
	ag := start(t, "agent", "--config", agentCfg)
	waitFor(t, "agent's tunnel up", func() bool { return strings.Contains(ag.stderr.String(), "tunnel up") })
	ag.stop(t)
	px.stop(t)
	for name, p := range map[string]*proc{"agent": ag, "proxy": px} {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, "level=ERROR") {
				t.Errorf("a clean stop of the %s logged an error: %s", name, line)
			}
		}
	}
}
