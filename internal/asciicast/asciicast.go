// Package asciicast writes and reads terminal recordings in the asciicast
// v2 format (https://docs.asciinema.org/manual/asciicast/v2/), which stock
// `asciinema play` and `asciinema cat` replay.
//
// # Format
//
// A recording is newline-delimited JSON. The first line is the header,
//
//	{"version":2,"width":80,"height":24,"timestamp":1764756000,"title":"alice@node1","env":{"TERM":"xterm","SHELL":"/bin/bash"}}
//
// and every later line one event, [time, code, data], with time the
// seconds since the start (a float, never decreasing):
//
//	[0.104211,"o","$ "]       output: what the terminal showed
//	[1.500000,"i","ls\r"]     input: what the user typed (only when asked for)
//	[2.031000,"r","120x40"]   resize: COLSxROWS
//	[9.000000,"m","note"]     marker: a note in the recording (a gap, a cap)
//
// # Invariants the Writer keeps
//
//   - Every data string is valid UTF-8, as asciinema requires. Terminal
//     output is bytes, and a multi-byte character may be split across two
//     reads: the Writer keeps an incomplete trailing sequence (at most 3
//     bytes, per stream) and puts it in front of the next chunk. Bytes that
//     can never be UTF-8 become U+FFFD, as a terminal would show them.
//   - A recording never exceeds its cap (Options.MaxBytes): the event that
//     would pass it is replaced by a marker saying the cap was reached, and
//     nothing more is written. Truncated then reports true.
//   - Memory is bounded by one event: the Writer encodes into its own
//     buffer and writes each event through as a whole.
//
// The Reader checks the same rules on the way in (Validate), for bytes
// from the network: bounded lines, a version 2 header with a sane size,
// known codes, times that never go back, "WxH" resizes.
package asciicast

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event codes.
const (
	Output = "o"
	Input  = "i"
	Resize = "r"
	Marker = "m"
)

// MaxLine bounds one line of a recording that is read: the Writer's events
// are far smaller (a chunk of 32 KiB escapes to at most 192 KiB).
const MaxLine = 1 << 20

// Header is the first line of a recording.
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Duration  float64           `json:"duration,omitempty"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// Event is one line after the header.
type Event struct {
	Time float64 // seconds since the start
	Code string
	Data string
}

// Options configures a Writer.
type Options struct {
	// MaxBytes caps the recording (header included); 0 means no cap.
	MaxBytes int64
}

// Writer writes one recording. It is not safe for concurrent use; the
// caller serializes (nodessh writes output, input and resizes from
// different goroutines through one lock).
type Writer struct {
	w         io.Writer
	opts      Options
	written   int64
	truncated bool
	last      float64           // time of the last event, so times never go back
	carry     map[string][]byte // incomplete UTF-8 tails by code
	buf       bytes.Buffer
	err       error
}

// StopMarker begins every marker that says a recording stopped before
// its session ended; CapMarker is the one for the cap.
const (
	StopMarker = "recording stopped: "
	CapMarker  = StopMarker + "it reached its cap of "
)

// AppendEvent appends one encoded event (a whole line) to b: for a writer
// that must add a last line outside a Writer (after its output failed).
func AppendEvent(b []byte, t time.Duration, code, data string) []byte {
	var buf bytes.Buffer
	encodeEvent(&buf, t.Seconds(), code, data)
	return append(b, buf.Bytes()...)
}

// markerReserve is kept free under the cap for the marker that says it
// was reached.
const markerReserve = 160

// NewWriter writes h (with Version 2) and returns a Writer for the events.
func NewWriter(w io.Writer, h Header, opts Options) (*Writer, error) {
	h.Version = 2
	if h.Width <= 0 {
		h.Width = 80
	}
	if h.Height <= 0 {
		h.Height = 24
	}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode asciicast header: %w", err)
	}
	line = append(line, '\n')
	if opts.MaxBytes > 0 && int64(len(line))+markerReserve > opts.MaxBytes {
		return nil, fmt.Errorf("asciicast cap of %d bytes is smaller than the header", opts.MaxBytes)
	}
	aw := &Writer{w: w, opts: opts, carry: map[string][]byte{}}
	if _, err := w.Write(line); err != nil {
		return nil, fmt.Errorf("write asciicast header: %w", err)
	}
	aw.written = int64(len(line))
	return aw, nil
}

// Truncated reports whether the cap was reached.
func (w *Writer) Truncated() bool { return w.truncated }

// Written is the recording's size so far.
func (w *Writer) Written() int64 { return w.written }

// Output records what the terminal showed at t since the start.
func (w *Writer) Output(t time.Duration, p []byte) error { return w.data(t, Output, p) }

// Input records what the user typed at t.
func (w *Writer) Input(t time.Duration, p []byte) error { return w.data(t, Input, p) }

// Resize records a new terminal size at t.
func (w *Writer) Resize(t time.Duration, cols, rows int) error {
	return w.event(t, Resize, strconv.Itoa(cols)+"x"+strconv.Itoa(rows))
}

// Mark records a marker (a note) at t.
func (w *Writer) Mark(t time.Duration, note string) error { return w.event(t, Marker, note) }

// Flush writes what is held back of incomplete UTF-8 (as U+FFFD): the
// recording ends here.
func (w *Writer) Flush(t time.Duration) error {
	for _, code := range []string{Output, Input} {
		if tail := w.carry[code]; len(tail) > 0 {
			w.carry[code] = nil
			if err := w.event(t, code, string(tail)); err != nil {
				return err
			}
		}
	}
	return w.err
}

// data writes p as one event of code, holding back an incomplete UTF-8
// sequence at its end for the next call.
func (w *Writer) data(t time.Duration, code string, p []byte) error {
	if w.err != nil || w.truncated {
		return w.err
	}
	if tail := w.carry[code]; len(tail) > 0 {
		p = append(append([]byte(nil), tail...), p...)
		w.carry[code] = nil
	}
	if cut := incompleteTail(p); cut < len(p) {
		w.carry[code] = append([]byte(nil), p[cut:]...)
		p = p[:cut]
	}
	if len(p) == 0 {
		return nil
	}
	return w.event(t, code, string(p))
}

// incompleteTail returns where a trailing, incomplete but so far valid
// UTF-8 sequence starts in p, or len(p) when p ends on a whole rune.
func incompleteTail(p []byte) int {
	// A rune is at most 4 bytes: its start is among the last 3 when it is
	// incomplete.
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		c := p[i]
		if c < 0x80 {
			return len(p) // ASCII: nothing pending
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(p[i:]) && validPrefix(p[i:]) {
				return i
			}
			return len(p)
		}
	}
	return len(p)
}

// validPrefix reports whether p, shorter than the rune its lead byte
// announces, can still become a valid rune (RFC 3629's table: no
// overlong forms, no surrogates, nothing past U+10FFFF). Anything else is
// invalid at once and is not held back.
func validPrefix(p []byte) bool {
	lo, hi := byte(0x80), byte(0xbf) // range of the first continuation byte
	var n int
	switch c := p[0]; {
	case c >= 0xc2 && c <= 0xdf:
		n = 2
	case c == 0xe0:
		n, lo = 3, 0xa0
	case c == 0xed:
		n, hi = 3, 0x9f
	case c >= 0xe1 && c <= 0xef:
		n = 3
	case c == 0xf0:
		n, lo = 4, 0x90
	case c >= 0xf1 && c <= 0xf3:
		n = 4
	case c == 0xf4:
		n, hi = 4, 0x8f
	default:
		return false
	}
	if len(p) >= n {
		return false
	}
	for i, c := range p[1:] {
		if i > 0 {
			lo, hi = 0x80, 0xbf
		}
		if c < lo || c > hi {
			return false
		}
	}
	return true
}

// event encodes one event and writes it whole, or the cap's marker.
func (w *Writer) event(t time.Duration, code, data string) error {
	if w.err != nil || w.truncated {
		return w.err
	}
	secs := t.Seconds()
	if secs < w.last {
		secs = w.last
	}
	w.buf.Reset()
	encodeEvent(&w.buf, secs, code, data)
	if w.opts.MaxBytes > 0 && w.written+int64(w.buf.Len())+markerReserve > w.opts.MaxBytes {
		w.truncated = true
		w.buf.Reset()
		encodeEvent(&w.buf, secs, Marker, fmt.Sprintf("%s%d bytes", CapMarker, w.opts.MaxBytes))
	}
	w.last = secs
	n, err := w.w.Write(w.buf.Bytes())
	w.written += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write asciicast event: %w", err)
	}
	return w.err
}

func encodeEvent(b *bytes.Buffer, secs float64, code, data string) {
	b.WriteByte('[')
	b.WriteString(strconv.FormatFloat(secs, 'f', 6, 64))
	b.WriteString(`,"`)
	b.WriteString(code)
	b.WriteString(`",`)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(data) // a string always encodes; invalid UTF-8 becomes U+FFFD
	b.Truncate(b.Len() - 1)
	b.WriteString("]\n")
}

// Limits bound what a Reader accepts.
type Limits struct {
	// MaxBytes bounds the whole recording; 0 means no bound.
	MaxBytes int64
}

// Reader reads a recording line by line, checking each.
type Reader struct {
	sc     *bufio.Scanner
	header Header
	line   int
	last   float64
	read   int64
	limits Limits
}

// ErrInvalid wraps every problem a Reader finds in a recording.
var ErrInvalid = errors.New("invalid asciicast")

func invalid(line int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrInvalid, line, fmt.Sprintf(format, args...))
}

// NewReader reads and checks the header.
func NewReader(r io.Reader, limits Limits) (*Reader, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	rd := &Reader{sc: sc, limits: limits}
	line, err := rd.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, invalid(1, "empty recording: no header")
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&rd.header); err != nil {
		return nil, invalid(1, "header is not a JSON object: %v", err)
	}
	h := rd.header
	switch {
	case h.Version != 2:
		return nil, invalid(1, "version %d; only asciicast version 2 is read", h.Version)
	case h.Width <= 0 || h.Width > 10000 || h.Height <= 0 || h.Height > 10000:
		return nil, invalid(1, "terminal size %dx%d is out of range", h.Width, h.Height)
	}
	return rd, nil
}

// Header is the recording's header.
func (r *Reader) Header() Header { return r.header }

func (r *Reader) next() ([]byte, error) {
	for r.sc.Scan() {
		r.line++
		b := r.sc.Bytes()
		r.read += int64(len(b)) + 1
		if r.limits.MaxBytes > 0 && r.read > r.limits.MaxBytes {
			return nil, invalid(r.line, "recording is larger than %d bytes", r.limits.MaxBytes)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		return b, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, invalid(r.line+1, "line longer than %d bytes", MaxLine)
		}
		return nil, fmt.Errorf("read asciicast: %w", err)
	}
	return nil, io.EOF
}

// Next returns the next event, or io.EOF after the last.
func (r *Reader) Next() (Event, error) {
	line, err := r.next()
	if err != nil {
		return Event{}, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
		return Event{}, invalid(r.line, "an event is [time, code, data]")
	}
	var ev Event
	if json.Unmarshal(raw[0], &ev.Time) != nil || ev.Time < 0 || ev.Time > 1e9 {
		return Event{}, invalid(r.line, "time %s is not a number of seconds", raw[0])
	}
	if ev.Time < r.last {
		return Event{}, invalid(r.line, "time %.6f goes back before %.6f", ev.Time, r.last)
	}
	r.last = ev.Time
	if json.Unmarshal(raw[1], &ev.Code) != nil {
		return Event{}, invalid(r.line, "the code is not a string")
	}
	if json.Unmarshal(raw[2], &ev.Data) != nil {
		return Event{}, invalid(r.line, "the data is not a string")
	}
	switch ev.Code {
	case Output, Input, Marker:
	case Resize:
		if _, _, ok := ParseSize(ev.Data); !ok {
			return Event{}, invalid(r.line, "resize %q is not COLSxROWS", ev.Data)
		}
	default:
		return Event{}, invalid(r.line, "unknown event code %q", ev.Code)
	}
	return ev, nil
}

// ParseSize reads "COLSxROWS".
func ParseSize(s string) (cols, rows int, ok bool) {
	a, b, found := bytes.Cut([]byte(s), []byte("x"))
	if !found {
		return 0, 0, false
	}
	c, err1 := strconv.Atoi(string(a))
	r, err2 := strconv.Atoi(string(b))
	if err1 != nil || err2 != nil || c <= 0 || r <= 0 || c > 10000 || r > 10000 {
		return 0, 0, false
	}
	return c, r, true
}

// Summary is what Validate learns of a recording.
type Summary struct {
	Header   Header
	Events   int
	Duration float64 // seconds: the last event's time
	Output   int64   // bytes of output data
	Inputs   int     // input events
	Markers  []string
	// Truncated says the recording stopped before its session ended
	// (a StopMarker: its cap, or the node could not write it).
	Truncated bool
}

// Validate reads a whole recording and checks every line.
func Validate(r io.Reader, limits Limits) (Summary, error) {
	rd, err := NewReader(r, limits)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{Header: rd.Header()}
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
		s.Events++
		s.Duration = ev.Time
		switch ev.Code {
		case Output:
			s.Output += int64(len(ev.Data))
		case Input:
			s.Inputs++
		case Marker:
			if len(s.Markers) < 16 {
				s.Markers = append(s.Markers, ev.Data)
			}
			s.Truncated = s.Truncated || strings.HasPrefix(ev.Data, StopMarker)
		}
	}
}
