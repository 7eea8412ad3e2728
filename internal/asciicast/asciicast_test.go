package asciicast

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// replay reads a recording back: its header and the concatenated data of
// code.
func replay(t *testing.T, cast []byte, code string) (Header, string) {
	t.Helper()
	rd, err := NewReader(bytes.NewReader(cast), Limits{})
	if err != nil {
		t.Fatalf("read header: %v\n%s", err, cast)
	}
	var out strings.Builder
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rd.Header(), out.String()
		}
		if err != nil {
			t.Fatalf("read event: %v\n%s", err, cast)
		}
		if ev.Code == code {
			out.WriteString(ev.Data)
		}
	}
}

// TestUTF8SplitAcrossChunks writes text with 2-, 3- and 4-byte characters
// cut at every byte offset into two chunks: each event must be valid
// UTF-8 and the replayed output the original text.
func TestUTF8SplitAcrossChunks(t *testing.T) {
	const text = "añ€𝄞x€€ñ𝄞"
	for cut := 0; cut <= len(text); cut++ {
		var b bytes.Buffer
		w, err := NewWriter(&b, Header{Width: 80, Height: 24}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Output(time.Millisecond, []byte(text[:cut])); err != nil {
			t.Fatal(err)
		}
		if err := w.Output(2*time.Millisecond, []byte(text[cut:])); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(3 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "\\ufffd") || strings.ContainsRune(b.String(), utf8.RuneError) {
			t.Errorf("cut at %d: a replacement character was written:\n%s", cut, b.String())
		}
		if _, got := replay(t, b.Bytes(), Output); got != text {
			t.Errorf("cut at %d: replayed %q, want %q", cut, got, text)
		}
	}
}

// TestUTF8ByteByByte feeds one byte per chunk.
func TestUTF8ByteByByte(t *testing.T) {
	const text = "€𝄞 ünï\r\n"
	var b bytes.Buffer
	w, _ := NewWriter(&b, Header{}, Options{})
	for i := 0; i < len(text); i++ {
		if err := w.Input(time.Duration(i)*time.Millisecond, []byte{text[i]}); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Flush(time.Second)
	if _, got := replay(t, b.Bytes(), Input); got != text {
		t.Errorf("replayed %q, want %q", got, text)
	}
}

// TestInvalidBytesBecomeReplacement: bytes that are never UTF-8 are not
// held back, and become U+FFFD; an incomplete tail at the end too.
func TestInvalidBytesBecomeReplacement(t *testing.T) {
	cases := []struct {
		in   []byte
		want string
	}{
		{[]byte{'a', 0xff, 'b'}, "a\uFFFDb"},
		{[]byte{'a', 0xe2, 0x82}, "a\uFFFD\uFFFD"},     // incomplete at the very end: flushed, a U+FFFD per byte
		{[]byte{'a', 0xc0}, "a\uFFFD"},                 // overlong lead: invalid at once
		{[]byte{0xed, 0xa0}, "\uFFFD\uFFFD"},           // a surrogate's start
		{[]byte{0x1b, '[', '3', '1', 'm'}, "\x1b[31m"}, // escapes survive
	}
	for _, c := range cases {
		var b bytes.Buffer
		w, _ := NewWriter(&b, Header{}, Options{})
		_ = w.Output(0, c.in)
		_ = w.Flush(time.Second)
		if _, got := replay(t, b.Bytes(), Output); got != c.want {
			t.Errorf("%q: replayed %q, want %q", c.in, got, c.want)
		}
	}
}

// TestCapStopsWithAMarker: past the cap nothing more is written but one
// marker, and the recording stays under the cap and valid.
func TestCapStopsWithAMarker(t *testing.T) {
	var b bytes.Buffer
	const limit = 4096
	w, err := NewWriter(&b, Header{Title: "alice@node1"}, Options{MaxBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789"), 30)
	for i := range 100 {
		if err := w.Output(time.Duration(i)*time.Millisecond, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if !w.Truncated() {
		t.Fatal("Truncated() = false after 30 KB into a 4 KB cap")
	}
	if int64(b.Len()) > limit || w.Written() != int64(b.Len()) {
		t.Errorf("recording is %d bytes (Written %d); cap %d", b.Len(), w.Written(), limit)
	}
	s, err := Validate(bytes.NewReader(b.Bytes()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Markers) != 1 || !strings.Contains(s.Markers[0], "cap of 4096 bytes") {
		t.Errorf("markers %q, want one about the cap", s.Markers)
	}
	if s.Output%int64(len(chunk)) != 0 || s.Output == 0 {
		t.Errorf("output of %d bytes: events must be written whole", s.Output)
	}
}

// TestTimesNeverGoBack: a clock that steps back still yields a readable
// recording.
func TestTimesNeverGoBack(t *testing.T) {
	var b bytes.Buffer
	w, _ := NewWriter(&b, Header{}, Options{})
	_ = w.Output(2*time.Second, []byte("a"))
	_ = w.Output(time.Second, []byte("b"))
	_ = w.Resize(time.Second, 100, 30)
	if _, err := Validate(bytes.NewReader(b.Bytes()), Limits{}); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRefuses(t *testing.T) {
	head := `{"version":2,"width":80,"height":24}` + "\n"
	cases := []struct {
		name, cast, want string
	}{
		{"empty", "", "no header"},
		{"not json", "hello\n", "header is not a JSON object"},
		{"version 1", `{"version":1,"width":80,"height":24}`, "only asciicast version 2"},
		{"zero size", `{"version":2,"width":0,"height":24}`, "out of range"},
		{"not an event", head + `{"a":1}`, "an event is [time, code, data]"},
		{"two fields", head + `[1,"o"]`, "an event is [time, code, data]"},
		{"bad time", head + `["x","o","a"]`, "is not a number"},
		{"negative time", head + `[-1,"o","a"]`, "is not a number"},
		{"time back", head + `[2,"o","a"]` + "\n" + `[1,"o","b"]`, "goes back"},
		{"bad code", head + `[1,"x","a"]`, "unknown event code"},
		{"bad resize", head + `[1,"r","80-24"]`, "is not COLSxROWS"},
		{"data not string", head + `[1,"o",5]`, "data is not a string"},
		{"long line", head + `[1,"o","` + strings.Repeat("a", MaxLine) + `"]`, "line longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Validate(strings.NewReader(c.cast), Limits{})
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an ErrInvalid saying %q", err, c.want)
			}
		})
	}
	_, err := Validate(strings.NewReader(head+`[1,"o","aaaa"]`+"\n"), Limits{MaxBytes: 40})
	if err == nil || !strings.Contains(err.Error(), "larger than 40 bytes") {
		t.Errorf("over the size limit: got %v", err)
	}
}
