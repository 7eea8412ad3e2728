package model

import (
	"strings"
	"testing"
)

func TestCheckWords(t *testing.T) {
	for _, s := range Strategies {
		if err := CheckStrategy(s); err != nil {
			t.Errorf("CheckStrategy(%q): %v", s, err)
		}
	}
	for _, p := range Profiles {
		if err := CheckProfile(p); err != nil {
			t.Errorf("CheckProfile(%q): %v", p, err)
		}
	}
	if err := CheckStrategy("fastest"); err == nil || err.Error() != `unknown strategy "fastest": use default, random, least_sessions or nearest` {
		t.Errorf("CheckStrategy(fastest) = %v", err)
	}
	if err := CheckProfile(""); err == nil || !strings.Contains(err.Error(), "use lan, wan or local") {
		t.Errorf("CheckProfile(\"\") = %v", err)
	}
}

func TestDefinition(t *testing.T) {
	good := Definition{Name: "web", Kind: KindTCP, Addr: "127.0.0.1:80", Labels: map[string]string{"env": "dev"}, Selector: "zone=a, rack=1"}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good): %v", err)
	}
	bad := Definition{Name: "web server", Kind: KindSSH, Selector: "zone"}
	err := bad.Validate()
	for _, want := range []string{"name: \"web server\" is not valid", "kind ssh are not supported", "selector: malformed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(bad) = %v, want it to say %q", err, want)
		}
	}
	sel, err := ParseSelector(good.Selector)
	if err != nil || !Matches(sel, map[string]string{"zone": "a", "rack": "1", "x": "y"}) || Matches(sel, map[string]string{"zone": "a"}) {
		t.Errorf("ParseSelector(%q) = %v, %v", good.Selector, sel, err)
	}
}
