package lint

import (
	"strings"
	"testing"
)

// TestPackageDocs checks that every package has one package comment, in
// one of its non-test files, and that it reads "Package <name> …" (or
// "Command <name> …" for a main package), as go doc and pkg.go.dev show
// it.
func TestPackageDocs(t *testing.T) {
	tr := loadTree(t)
	for _, p := range tr.pkgs {
		if p.name == "" {
			continue // tests only: documented by the package they test
		}
		var docFiles []string
		for _, f := range p.files {
			if f.test || f.ast.Doc == nil {
				continue
			}
			docFiles = append(docFiles, f.name)
			text := f.ast.Doc.Text()
			want := "Package " + p.name + " "
			if p.name == "main" {
				want = "Command " + lastElem(p.dir) + " "
			}
			if !strings.HasPrefix(text, want) {
				first, _, _ := strings.Cut(text, "\n")
				t.Errorf("%s/%s: package comment starts %q; want %q", p.dir, f.name, first, want+"…")
			}
		}
		switch len(docFiles) {
		case 0:
			t.Errorf("%s: package %s has no package comment: write one, starting %q, in doc.go or its main file", p.dir, p.name, "Package "+p.name+" ")
		case 1:
		default:
			t.Errorf("%s: package %s has package comments in %s; keep one (go doc joins them)", p.dir, p.name, strings.Join(docFiles, ", "))
		}
	}
}

func lastElem(dir string) string {
	return dir[strings.LastIndex(dir, "/")+1:]
}
