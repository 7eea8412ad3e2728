package lint

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// pkg is one package of the module as its files declare it: every .go
// file of a directory, whatever its build constraints, so that a rule
// also holds for the code only some platforms or tags compile.
type pkg struct {
	dir   string // slash-separated, relative to the module root ("actors/proxy")
	name  string // the package clause of its non-test files
	files []*file
}

type file struct {
	name string // base name
	test bool   // a _test.go file (internal or external test package)
	ast  *ast.File
}

// imp is one import of a package of this module, by one file.
type imp struct {
	file string // relative to the module root
	line int
	path string // relative to the module root ("transport/pki")
}

type tree struct {
	root   string // absolute directory of go.mod
	module string // module path
	pkgs   []*pkg // by dir
	fset   *token.FileSet
}

var (
	treeOnce sync.Once
	theTree  *tree
	treeErr  error
)

// loadTree parses the module once for every test of the package.
func loadTree(t *testing.T) *tree {
	t.Helper()
	treeOnce.Do(func() { theTree, treeErr = parseTree() })
	if treeErr != nil {
		t.Fatal(treeErr)
	}
	return theTree
}

func parseTree() (*tree, error) {
	root, module, err := findModule()
	if err != nil {
		return nil, err
	}
	tr := &tree{root: root, module: module, fset: token.NewFileSet()}
	byDir := map[string]*pkg{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p == root {
				return nil
			}
			// The go command ignores these directories; a nested module is
			// not ours to check.
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			return nil
		}
		f, err := parser.ParseFile(tr.fset, p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		dir := filepath.ToSlash(rel)
		k := byDir[dir]
		if k == nil {
			k = &pkg{dir: dir}
			byDir[dir] = k
			tr.pkgs = append(tr.pkgs, k)
		}
		test := strings.HasSuffix(name, "_test.go")
		if !test && k.name == "" {
			k.name = f.Name.Name
		}
		k.files = append(k.files, &file{name: name, test: test, ast: f})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(tr.pkgs, func(a, b *pkg) int { return strings.Compare(a.dir, b.dir) })
	return tr, nil
}

// findModule walks up from the test's directory to go.mod.
func findModule() (root, module string, err error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", "", err
	}
	for {
		f, err := os.Open(filepath.Join(dir, "go.mod"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					if m, err := strconv.Unquote(strings.TrimSpace(rest)); err == nil {
						return dir, m, nil
					}
					return dir, strings.TrimSpace(rest), nil
				}
			}
			return "", "", fs.ErrInvalid
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", fs.ErrNotExist
		}
		dir = parent
	}
}

// ownImports lists the imports of the module's packages in f.
func (tr *tree) ownImports(p *pkg, f *file) []imp {
	var out []imp
	for _, s := range f.ast.Imports {
		ip, err := strconv.Unquote(s.Path.Value)
		if err != nil {
			continue
		}
		rel, ok := strings.CutPrefix(ip, tr.module+"/")
		if !ok {
			continue
		}
		out = append(out, imp{
			file: path.Join(p.dir, f.name),
			line: tr.fset.Position(s.Pos()).Line,
			path: rel,
		})
	}
	return out
}
