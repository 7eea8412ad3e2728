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

var lineRE = regexp.MustCompile(`^line (\d+): `)

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
	fields := map[int]string{}
	indexKeys(&root, "", fields)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		m = strings.Replace(m, "cannot unmarshal !!str", "cannot read text", 1)
		m = strings.Replace(m, "cannot unmarshal !!", "cannot read ", 1)
		if strings.Contains(m, "not found in type") {
			// "line 5: field usr not found in type proxy.Listen"
			m = m[:strings.Index(m, " not found in type")] + " is not a known setting"
		} else if sm := lineRE.FindStringSubmatch(m); sm != nil {
			var line int
			fmt.Sscan(sm[1], &line)
			if f := fields[line]; f != "" {
				m = sm[0] + f + ": " + strings.TrimPrefix(m, sm[0])
			}
		}
		msgs[i] = m
	}
	return errors.New(strings.Join(msgs, "; "))
}

// indexKeys maps the line of every mapping value to its key path.
func indexKeys(n *yaml.Node, path string, out map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexKeys(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[v.Line] = p
			indexKeys(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if c.Kind == yaml.ScalarNode {
				out[c.Line] = p
			}
			indexKeys(c, p, out)
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
