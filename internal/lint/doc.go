// Package lint holds Warren's house rules as tests, read from the source
// tree with go/parser: which rooms of the tree may import which
// (deps_test.go) and the package comment every package carries
// (pkgdoc_test.go). It has no code of its own; `go test ./internal/lint`
// checks the whole module in a second.
package lint
