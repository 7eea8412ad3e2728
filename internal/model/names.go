package model

// The one set of rules for the names and labels Warren takes from operators
// and from the network: agent, proxy, resource, role and cluster names,
// label keys and values, and name globs. Every package that accepts such a
// name checks it here, before it looks it up, logs it or audits it, so the
// rules cannot drift apart.

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// MaxName is the longest name: names are used as SSH host names and as DNS
// labels, which hold at most 63 bytes.
const MaxName = 63

// NameRule says in words what ValidName accepts, for messages.
const NameRule = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"

// Label bounds. Labels travel in every heartbeat and are replicated to
// every proxy, so they are small by rule.
const (
	MaxLabelKey   = 63
	MaxLabelValue = 128
	MaxLabels     = 32
)

// ValidName reports whether s is a valid agent, proxy, resource, role or
// cluster name: 1–63 letters, digits, '.', '_' or '-', starting with a
// letter or digit.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxName || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// CheckName returns nil for a valid name, or an error naming what is wrong
// with it (what, e.g. "resource name", opens the sentence).
func CheckName(what, s string) error {
	if ValidName(s) {
		return nil
	}
	return fmt.Errorf("%s %s is not valid: use %s", what, Quote(s), NameRule)
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Quote renders an untrusted string for a message or a log line: quoted,
// escaped, and cut to 64 bytes with the full length given, so a 200 KB
// name from the network never reaches a log or an audit record whole.
func Quote(s string) string { return QuoteN(s, 64) }

// QuoteN is Quote with a cap of max bytes, for longer texts such as a
// peer's error message.
func QuoteN(s string, max int) string {
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:max]) + fmt.Sprintf("… (%d bytes)", len(s))
}

// ValidGlob reports whether g is a valid name glob: a name in which '*'
// stands for any run of name characters and '?' for one ('web-*', '*').
func ValidGlob(g string) bool {
	if g == "" || len(g) > MaxName {
		return false
	}
	for i := 0; i < len(g); i++ {
		if c := g[i]; !alnum(c) && c != '.' && c != '_' && c != '-' && c != '*' && c != '?' {
			return false
		}
	}
	return true
}

// MatchGlob reports whether name matches glob g (see ValidGlob). An invalid
// glob matches nothing.
func MatchGlob(g, name string) bool {
	if !ValidGlob(g) {
		return false
	}
	ok, err := path.Match(g, name)
	return err == nil && ok
}

// MatchAny reports whether name matches one of globs.
func MatchAny(globs []string, name string) bool {
	for _, g := range globs {
		if MatchGlob(g, name) {
			return true
		}
	}
	return false
}

// CheckLabel reports a label that cannot be stored, matched or printed
// safely: keys are 1–63 bytes of name characters plus '/', values at most
// 128 printable bytes without ',' or '='.
func CheckLabel(k, v string) error {
	switch {
	case k == "" || len(k) > MaxLabelKey:
		return fmt.Errorf("label key %s must be 1-%d bytes", Quote(k), MaxLabelKey)
	case strings.IndexFunc(k, func(r rune) bool {
		return r > 0x7f || !alnum(byte(r)) && r != '.' && r != '_' && r != '-' && r != '/'
	}) >= 0:
		return fmt.Errorf("label key %s may hold only letters, digits, '.', '_', '-' and '/'", Quote(k))
	case len(v) > MaxLabelValue:
		return fmt.Errorf("label %s: value %s is longer than %d bytes", k, Quote(v), MaxLabelValue)
	case strings.ContainsAny(v, ",=") || strings.IndexFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("label %s: value %s may not hold ',', '=' or control characters", k, Quote(v))
	}
	return nil
}

// CheckLabels checks every label of a set and the size of the set.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels; at most %d are allowed", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if err := CheckLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

// LabelBytes is the size of a label set as replicated: keys and values.
func LabelBytes(labels map[string]string) int {
	n := 0
	for k, v := range labels {
		n += len(k) + len(v)
	}
	return n
}
