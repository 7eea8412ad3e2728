package check

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// A path in backquotes, relative (to the document or the repository).
	quotedPath = regexp.MustCompile("`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*)`")
	// A path of the repository named in running text (not inside a URL).
	barePath = regexp.MustCompile(`(?m)(?:^|[\s(])((?:deploy|docs|bench|cmd|actors|internal|cluster|transport|storage)/[A-Za-z0-9_./-]*[A-Za-z0-9_])`)
)

// notOurs are paths the documents name in other projects (Teleport's
// repository) or on a host, not in this repository.
var notOurs = map[string]bool{
	"examples/chart/teleport-cluster/":         true,
	"rfd/0069-proxy-peering.md":                true,
	"rfd/0226-stranded-connection-recovery.md": true,
	"auth/join_tokens":                         true, // under /var/lib/warren
}

// TestDocPaths checks that every file or directory of this repository the
// deployment documents name exists, relative to the document or to the
// repository's root.
func TestDocPaths(t *testing.T) {
	docs := []string{"../MULTI-REGION.md", "../README.md", "../compose/README.md", "../helm/warren/values.yaml", "../compose/compose.yaml"}
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, m := range quotedPath.FindAllStringSubmatch(string(data), -1) {
			paths = append(paths, m[1])
		}
		for _, m := range barePath.FindAllStringSubmatch(string(data), -1) {
			paths = append(paths, m[1])
		}
		for _, p := range paths {
			if notOurs[p] || strings.HasPrefix(p, "./bin/") {
				continue
			}
			found := false
			for _, base := range []string{filepath.Dir(doc), "../.."} {
				if _, err := os.Stat(filepath.Join(base, p)); err == nil {
					found = true
				}
			}
			if !found {
				t.Errorf("%s names %s, which is neither beside it nor in the repository", doc, p)
			}
		}
	}
}
