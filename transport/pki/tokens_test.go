package pki

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"one", "abc\n", []string{"abc"}},
		{"no final newline", "abc", []string{"abc"}},
		{"comments and blanks", "# header\n\n  abc  \n# def\nghi # for node7\r\n", []string{"abc", "ghi"}},
		{"only comments", "#a\n #b\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseTokens(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2*TokenBytes || a == b {
		t.Errorf("got tokens %q and %q, want two different %d-digit hex tokens", a, b, 2*TokenBytes)
	}
}

type tokenCase struct {
	name string
	tok  string
	want bool
}

func TestCheckJoinToken(t *testing.T) {
	a := newTestAuthority(t)
	toks, err := a.JoinTokens()
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 1 {
		t.Fatalf("got %d join tokens after Init, want 1", len(toks))
	}
	good := toks[0]
	path := filepath.Join(a.Dir, FileJoinTokens)

	check := func(t *testing.T, tests []tokenCase) {
		t.Helper()
		for _, tt := range tests {
			if got := a.CheckJoinToken(tt.tok); got != tt.want {
				t.Errorf("%s: CheckJoinToken(%q): got %v, want %v", tt.name, tt.tok, got, tt.want)
			}
		}
	}
	check(t, []tokenCase{
		{"good", good, true},
		{"wrong", strings.Repeat("0", len(good)), false},
		{"empty", "", false},
		{"prefix", good[:len(good)-1], false},
		{"longer", good + "0", false},
		{"with newline", good + "\n", false},
		{"comment", "#", false},
	})

	// An operator adds a token while the proxy runs, then revokes the first.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("added-later # for node7\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check(t, []tokenCase{
		{"original", good, true},
		{"added later", "added-later", true},
		{"added with its comment", "added-later # for node7", false},
	})
	writeFile(t, path, "added-later\n", 0o600)
	check(t, []tokenCase{
		{"revoked", good, false},
		{"kept", "added-later", true},
	})

	// A token file others may read accepts nothing.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	check(t, []tokenCase{{"file readable by others", "added-later", false}})
	if _, err := a.JoinTokens(); err == nil || !strings.Contains(err.Error(), "run chmod 600 "+path) {
		t.Errorf("JoinTokens with mode 0644: got error %v, want the chmod hint", err)
	}
}

func TestCheckAPIToken(t *testing.T) {
	a := newTestAuthority(t)
	good, err := a.APIToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(good) < 32 {
		t.Fatalf("got API token %q, want at least 128 bits", good)
	}
	tests := []tokenCase{
		{"good", good, true},
		{"wrong", strings.Repeat("f", len(good)), false},
		{"empty", "", false},
		{"prefix", good[:10], false},
	}
	for _, tt := range tests {
		if got := a.CheckAPIToken(tt.tok); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}

	// The file is re-read: a rotated token takes effect at once.
	path := filepath.Join(a.Dir, FileAPIToken)
	writeFile(t, path, "rotated\n", 0o600)
	if !a.CheckAPIToken("rotated") || a.CheckAPIToken(good) {
		t.Error("after rotation: got the old token accepted or the new one refused, want the opposite")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if a.CheckAPIToken("rotated") {
		t.Error("missing token file: got token accepted, want refused")
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add("abc\n# c\n def # x\n")
	f.Add("\r\n#\n\x00")
	f.Fuzz(func(t *testing.T, in string) {
		for _, tok := range parseTokens(in) {
			if tok == "" || strings.ContainsAny(tok, "#\n") || strings.TrimSpace(tok) != tok {
				t.Errorf("parseTokens(%q): got token %q", in, tok)
			}
		}
	})
}
