package asciicast

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzReader: any bytes either read as a recording or fail with
// ErrInvalid (or a read error), never panic; events read are sane.
func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"version":2,"width":80,"height":24}` + "\n" + `[0.5,"o","hi"]` + "\n" + `[1,"r","100x30"]`))
	f.Add([]byte(`{"version":2,"width":80,"height":24,"env":{"TERM":"xterm"}}` + "\n" + `[0,"m",""]`))
	f.Add([]byte("[1,\"o\",\"x\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd, err := NewReader(bytes.NewReader(data), Limits{MaxBytes: 1 << 20})
		if err != nil {
			return
		}
		last := 0.0
		for {
			ev, err := rd.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrInvalid) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if ev.Time < last {
				t.Fatalf("time went back: %v after %v", ev.Time, last)
			}
			last = ev.Time
		}
	})
}

// FuzzWriterRoundTrip: whatever bytes arrive, cut wherever, the recording
// reads back, and valid UTF-8 comes back unchanged.
func FuzzWriterRoundTrip(f *testing.F) {
	f.Add([]byte("añ€𝄞"), uint8(2))
	f.Add([]byte{0xe2, 0x82, 0xac, 0xff, 0xf0, 0x9d}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		n := int(step%16) + 1
		var b bytes.Buffer
		w, err := NewWriter(&b, Header{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(data); i += n {
			if err := w.Output(time.Duration(i), data[i:min(i+n, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(time.Second); err != nil {
			t.Fatal(err)
		}
		rd, err := NewReader(bytes.NewReader(b.Bytes()), Limits{})
		if err != nil {
			t.Fatalf("recording does not read back: %v", err)
		}
		var out []byte
		for {
			ev, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("recording does not read back: %v\n%s", err, b.Bytes())
			}
			out = append(out, ev.Data...)
		}
		if utf8.Valid(data) && !bytes.Equal(out, data) {
			t.Fatalf("valid UTF-8 %q came back as %q", data, out)
		}
	})
}
