package catalog

import (
	"path/filepath"
	"testing"
)

func TestConfigSurvivesReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cat")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := []ConfigEntry{
		{Key: "resource/web", Value: []byte(`{"name":"web"}`), Wall: 10, Node: "p1"},
		{Key: "resource/db", Deleted: true, Wall: 11, Logical: 2, Node: "p2"},
	}
	if err := s.PutConfig(in...); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "resource/db" || !got[0].Deleted || got[0].Logical != 2 || string(got[1].Value) != `{"name":"web"}` {
		t.Fatalf("got %+v, want both entries back in key order", got)
	}
	if err := s.PutConfig(ConfigEntry{Key: "bad\x00key"}); err == nil {
		t.Fatal("a key with NUL was accepted")
	}
}
