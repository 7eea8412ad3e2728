// Package conf reads YAML config files strictly: an unknown or mistyped
// field is an error that names the field and its line, so an operator's
// typo is caught at start-up instead of being silently ignored.
package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load decodes the YAML file at path into v, rejecting unknown fields.
func Load(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := Decode(data, v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Decode decodes YAML bytes into v, rejecting unknown fields.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file means all defaults
		}
		return friendly(data, err)
	}
	return nil
}

var (
	lineRE  = regexp.MustCompile(`^line (\d+): `)
	terrRE  = regexp.MustCompile("^line \\d+: cannot unmarshal (!![a-z]+|[^ ]+)( `(.*)`)? into ")
	fieldRE = regexp.MustCompile(`^line \d+: field (.*) not found in type `)
	durRE   = regexp.MustCompile("^line \\d+: cannot unmarshal !![a-z]+ `(.*)` into time\\.Duration$")
	digits  = regexp.MustCompile(`^[0-9]+$`)
)

// friendly rewrites yaml.v3's messages into one line per problem, naming
// the field (by its path, like tunnel.keepalive_count) where yaml.v3 gives
// only a line number.
func friendly(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	nodes := map[int][]located{}
	indexNodes(&root, "", nodes)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		sm := lineRE.FindStringSubmatch(m)
		var line int
		if sm != nil {
			fmt.Sscan(sm[1], &line)
		}
		if fm := fieldRE.FindStringSubmatch(m); fm != nil {
			name := fm[1]
			if l := take(nodes[line], false, func(l *located) bool { return l.key && l.n.Value == fm[1] }); l != nil {
				name = l.path
			}
			msgs[i] = fmt.Sprintf("line %d: field %s is not a known setting", line, name)
			continue
		}
		path := ""
		if tm := terrRE.FindStringSubmatch(m); tm != nil {
			// A container that fails to decode is not descended into,
			// so of the containers on one line the innermost failed.
			container := tm[1] == "!!seq" || tm[1] == "!!map"
			if l := take(nodes[line], container, func(l *located) bool { return !l.key && matches(l.n, tm[1], tm[3]) }); l != nil {
				path = l.path
			}
		}
		if dm := durRE.FindStringSubmatch(m); dm != nil {
			// yaml.v3 reads durations only as Go duration text: say so,
			// with the number the operator wrote if it was one.
			like := "30s"
			if digits.MatchString(dm[1]) {
				like = dm[1] + "s"
			}
			m = fmt.Sprintf("%s`%s` is not a duration: durations take units, like %s", sm[0], dm[1], like)
		}
		m = strings.Replace(m, "cannot unmarshal !!str", "cannot read text", 1)
		m = strings.Replace(m, "cannot unmarshal !!", "cannot read ", 1)
		if sm != nil && path != "" {
			m = sm[0] + path + ": " + strings.TrimPrefix(m, sm[0])
		}
		msgs[i] = m
	}
	return errors.New(strings.Join(msgs, "; "))
}

// located is a key or value node with its field path.
type located struct {
	path string
	n    *yaml.Node
	key  bool
	used bool
}

// take returns the first (or, with last, the last) unused entry that ok
// accepts and marks it used, so two errors on one line name two fields.
func take(ls []located, last bool, ok func(*located) bool) *located {
	for j := range ls {
		i := j
		if last {
			i = len(ls) - 1 - j
		}
		if !ls[i].used && ok(&ls[i]) {
			ls[i].used = true
			return &ls[i]
		}
	}
	return nil
}

// matches reports whether n is the node yaml.v3 describes by tag and value
// (shortened as yaml.v3 shortens it) in a type error.
func matches(n *yaml.Node, tag, value string) bool {
	switch tag {
	case "!!seq":
		return n.Kind == yaml.SequenceNode
	case "!!map":
		return n.Kind == yaml.MappingNode
	}
	v := n.Value
	if len(v) > 10 {
		v = v[:7] + "..."
	}
	return n.Kind == yaml.ScalarNode && v == value
}

// indexNodes lists, by line, every key and value node with its path, in
// document order.
func indexNodes(n *yaml.Node, path string, out map[int][]located) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out[c.Line] = append(out[c.Line], located{path: path, n: c})
			indexNodes(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[k.Line] = append(out[k.Line], located{path: p, n: k, key: true})
			out[v.Line] = append(out[v.Line], located{path: p, n: v})
			indexNodes(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[c.Line] = append(out[c.Line], located{path: p, n: c})
			indexNodes(c, p, out)
		}
	}
}

// Errors collects validation problems, each prefixed by its field path.
type Errors []error

// Addf adds a problem for field.
func (e *Errors) Addf(field, format string, args ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Err returns nil or all problems joined.
func (e Errors) Err() error { return errors.Join(e...) }
