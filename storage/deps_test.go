package storage

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/warren-proxy/warren/"

// TestDependencies keeps storage at the bottom of the dependency graph: its
// packages, tests included, import nothing of this module outside storage/.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-test", "-f", "{{.ImportPath}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, _, _ := strings.Cut(line, " ") // "p [p.test]" names a test variant
		pkg = strings.TrimSuffix(pkg, ".test")
		pkg = strings.TrimSuffix(pkg, "_test")
		if strings.HasPrefix(pkg, module) && pkg != module+"storage" && !strings.HasPrefix(pkg, module+"storage/") {
			t.Errorf("storage depends on %s; storage must import nothing else of this module", pkg)
		}
	}
}
