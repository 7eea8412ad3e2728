package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bannerSSH returns the banner's ssh command lines that end in 'echo hi'.
func bannerSSH(t *testing.T, banner string) []string {
	t.Helper()
	lines := regexp.MustCompile(`(?m)^\s+((?:ip netns exec \S+ )?ssh -F .*'echo hi')`).FindAllStringSubmatch(banner, -1)
	if len(lines) == 0 {
		t.Fatalf("the banner shows no ssh line:\n%s", banner)
	}
	var out []string
	for _, l := range lines {
		out = append(out, l[1])
	}
	return out
}

// runBannerLine runs a line of the banner as a user would paste it.
func runBannerLine(t *testing.T, line string) {
	t.Helper()
	out, err := exec.Command("sh", "-c", line+" </dev/null").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hi" {
		t.Errorf("%s: %v, output %q; want hi", line, err, out)
	}
}

// `warren dev --regions us,eu,ap`: a proxy and an agent per region on
// loopback; the banner's ssh lines enter one region and reach another's
// node, and the cluster's status shows the three regions. The directory
// is one a plain `warren dev` ran in first: the agent serving echo there
// serves it here too (another would be refused the name).
func TestDevRegions(t *testing.T) {
	dir := t.TempDir()
	plain := start(t, "dev", "--dir", dir, "--user-port", "0", "--tunnel-port", "0", "--http-port", "0")
	waitFor(t, "plain dev cluster up", func() bool { return strings.Contains(plain.stdout.String(), "is up") })
	plain.stop(t)
	p := start(t, "dev", "--dir", dir, "--regions", "us,eu,ap", "--user-port", "0", "--tunnel-port", "0", "--http-port", "0")
	waitFor(t, "dev cluster up", func() bool { return strings.Contains(p.stdout.String(), "is up") })
	banner := p.stdout.String()
	for _, line := range bannerSSH(t, banner) {
		runBannerLine(t, line)
	}
	m := regexp.MustCompile(`ssh -F (\S+) warren-us status`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("the banner shows no status line:\n%s", banner)
	}
	out, errs, code := sshRun(t, m[1], "warren-us", "status")
	for _, r := range []string{" us ", " eu ", " ap "} {
		if code != 0 || !strings.Contains(out, r) {
			t.Errorf("status through warren-us: exit %d, stdout %q, stderr %q; want region%s", code, out, errs, r)
		}
	}
	p.stop(t)
}

func TestDevRegionsRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--regions", "us,Bad Name"}, "--regions"},
		{[]string{"--regions", "us,us"}, "listed twice"},
		{[]string{"--wan"}, "add --regions"},
	} {
		_, errs, code := runWarren(t, append([]string{"dev", "--dir", t.TempDir()}, tc.args...)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("dev %v: exit %d, stderr %q; want an error naming %q", tc.args, code, errs, tc.want)
		}
	}
}

// `warren dev --regions us,eu --wan`: the same cluster in the emulated
// WAN (as root); the banner's line, run as printed, reaches the other
// region's node from a user host, and Ctrl-C leaves no namespace behind.
func TestDevRegionsWAN(t *testing.T) {
	if os.Getenv("WARREN_REQUIRE_NETNS") == "" && os.Geteuid() != 0 {
		t.Skip("the emulated WAN needs root (network namespaces); CI runs this as root")
	}
	dir := t.TempDir()
	p := start(t, "dev", "--dir", dir, "--regions", "us,eu", "--wan")
	// Six warren processes start on their hosts (under -race when the
	// tests are): longer than waitFor's 30 s on a busy machine.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(p.stdout.String(), "is up") {
		if time.Now().After(deadline) || strings.Contains(p.stderr.String(), "level=ERROR") {
			t.Fatalf("no dev cluster in the emulated WAN; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	banner := p.stdout.String()
	if !strings.Contains(banner, "us-eu 40ms one way") {
		t.Errorf("the banner does not show the latency matrix:\n%s\nstderr:\n%s", banner, p.stderr.String())
	}
	ns := regexp.MustCompile(`ip netns exec (wan\d+-\d+)-`).FindStringSubmatch(banner)
	for _, line := range bannerSSH(t, banner) {
		runBannerLine(t, line)
	}
	p.stop(t)
	if ns != nil {
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), ns[1]+"-") {
			t.Errorf("namespaces %s-* left after the dev cluster stopped:\n%s", ns[1], out)
		}
	}
}
