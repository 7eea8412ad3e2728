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
		return friendly(err)
	}
	return nil
}

// friendly rewrites yaml.v3's messages into one line per problem.
func friendly(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			m = strings.Replace(m, "cannot unmarshal !!str", "cannot read text", 1)
			m = strings.Replace(m, "not found in type", "is not a known setting in", 1)
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return fmt.Errorf("invalid YAML: %w", err)
}

// Errors collects validation problems, each prefixed by its field path.
type Errors []error

// Addf adds a problem for field.
func (e *Errors) Addf(field, format string, args ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Err returns nil or all problems joined.
func (e Errors) Err() error { return errors.Join(e...) }
