package conf

import (
	"testing"
	"time"
)

func FuzzProbeHang(f *testing.F) {
	for _, s := range []string{"", "name: a\n", "a: &a [*a]\n", "resources:\n  - name: [web]\n", "tunnel: {keepalive_count: abc}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan struct{})
		go func() {
			var a testConfig
			_ = Decode(data, &a)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("hang on %q", data)
		}
	})
}
