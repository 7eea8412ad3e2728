package model

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"web", true},
		{"node-1.example_2", true},
		{"9lives", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-web", false},
		{".web", false},
		{"web server", false},
		{"web\n", false},
		{"wéb", false},
		{"a/b", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
		if err := CheckName("resource name", tt.in); (err == nil) != tt.want {
			t.Errorf("CheckName(%q) = %v, want valid %v", tt.in, err, tt.want)
		}
	}
	if err := CheckName("proxy id", "a b"); err == nil || err.Error() != `proxy id "a b" is not valid: use `+NameRule {
		t.Errorf("CheckName message: %v", err)
	}
}

func TestCheckLabel(t *testing.T) {
	tests := []struct {
		k, v string
		ok   bool
	}{
		{"env", "prod", true},
		{"team.example/owner", "a b", true},
		{"", "x", false},
		{strings.Repeat("k", MaxLabelKey+1), "x", false},
		{"k=", "x", false},
		{"k", strings.Repeat("v", MaxLabelValue+1), false},
		{"k", "a,b", false},
		{"k", "a=b", false},
		{"k", "a\nb", false},
	}
	for _, tt := range tests {
		if err := CheckLabel(tt.k, tt.v); (err == nil) != tt.ok {
			t.Errorf("CheckLabel(%q, %q) = %v, want ok %v", tt.k, tt.v, err, tt.ok)
		}
	}
}
