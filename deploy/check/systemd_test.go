package check

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const systemdDir = "../systemd"

// TestSystemdUnits runs `systemd-analyze verify` on the units (the agent's
// with and without its tcp-only drop-in), which loads them as systemd
// would and reports an unknown or malformed setting. It needs no running
// systemd. verify also wants ExecStart's binary, so the copies it checks
// run a stub in place of /usr/local/bin/warren; nothing else changes.
// Without systemd-analyze the test is skipped, or fails when
// WARREN_REQUIRE_SYSTEMD is set.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("WARREN_REQUIRE_SYSTEMD") != "" {
			t.Fatal("systemd-analyze is not installed (apt-get install systemd), and WARREN_REQUIRE_SYSTEMD is set")
		}
		t.Skip("systemd-analyze is not installed (apt-get install systemd); set WARREN_REQUIRE_SYSTEMD=1 to fail instead")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "warren")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	units := map[string]string{}
	for _, name := range []string{"warren-proxy.service", "warren-agent.service"} {
		data, err := os.ReadFile(filepath.Join(systemdDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("ExecStart=/usr/local/bin/warren ")) {
			t.Fatalf("%s does not run /usr/local/bin/warren", name)
		}
		units[name] = strings.ReplaceAll(string(data), "/usr/local/bin/warren", stub)
	}
	dropIn, err := os.ReadFile(filepath.Join(systemdDir, "warren-agent-tcp-only.conf"))
	if err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, dropIns map[string]string) {
		t.Helper()
		ud := filepath.Join(t.TempDir(), "units")
		var paths []string
		for name, text := range units {
			writeFile(t, filepath.Join(ud, name), text)
			paths = append(paths, filepath.Join(ud, name))
		}
		for path, text := range dropIns {
			writeFile(t, filepath.Join(ud, path), text)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, analyze, append([]string{"verify"}, paths...)...)
		cmd.Dir = ud
		out, err := cmd.CombinedOutput()
		// verify exits 0 on a setting it ignores ("Unknown key ...,
		// ignoring"): any word from it is a failure.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	t.Run("units", func(t *testing.T) { verify(t, nil) })
	t.Run("agent tcp-only", func(t *testing.T) {
		verify(t, map[string]string{"warren-agent.service.d/tcp-only.conf": string(dropIn)})
	})
	t.Run("catches a typo", func(t *testing.T) {
		ud := filepath.Join(t.TempDir(), "units")
		path := filepath.Join(ud, "warren-proxy.service")
		writeFile(t, path, strings.Replace(units["warren-proxy.service"], "ProtectSystem=", "ProtectSytem=", 1))
		out, _ := exec.Command(analyze, "verify", path).CombinedOutput()
		if !bytes.Contains(out, []byte("ProtectSytem")) {
			t.Fatalf("systemd-analyze verify said nothing of an unknown key:\n%s", out)
		}
	})
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
