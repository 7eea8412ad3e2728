package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
)

// warrenBinary is the warren executable built for these tests.
var warrenBinary string

func TestMain(m *testing.M) {
	bin, err := harness.BuildWarren(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrenBinary = bin
	code := m.Run()
	os.RemoveAll(filepath.Dir(bin))
	os.Exit(code)
}

// testEnv is an Env for one test, with progress in the test log.
func testEnv(t *testing.T) Env {
	return Env{Binary: warrenBinary, Dir: t.TempDir(), Progress: testWriter{t}}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

// runTiny runs a scenario's tiny configuration and checks that it
// produced tables with rows, CSV files and PNG plots.
func runTiny(t *testing.T, name string) Report {
	t.Helper()
	var sc *Scenario
	for _, s := range Scenarios() {
		if s.Name == name {
			sc = &s
		}
	}
	if sc == nil {
		t.Fatalf("no scenario %q", name)
	}
	fs := flagSet(name)
	run := sc.Flags(fs, true)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := run(ctx, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tables) == 0 {
		t.Fatal("no tables")
	}
	for _, tb := range rep.Tables {
		if len(tb.Rows) == 0 {
			t.Errorf("table %q has no rows", tb.Title)
		}
		for _, r := range tb.Rows {
			if len(r) != len(tb.Header) {
				t.Errorf("table %q: row %v does not fit header %v", tb.Title, r, tb.Header)
			}
		}
	}
	out := t.TempDir()
	paths, err := rep.WriteFiles(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < len(rep.Tables)+len(rep.Plots) {
		t.Errorf("wrote %v", paths)
	}
	var md testBuf
	rep.Markdown(&md)
	t.Logf("\n%s", md)
	return rep
}

type testBuf []byte

func (b *testBuf) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
func (b testBuf) String() string               { return string(b) }
