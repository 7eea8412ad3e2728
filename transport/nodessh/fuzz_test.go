package nodessh

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// FuzzEnvProblem checks that whatever a client sends, an accepted variable
// is a well-formed, unreserved NAME=value.
func FuzzEnvProblem(f *testing.F) {
	for _, s := range [][2]string{{"FOO", "bar"}, {"LD_PRELOAD", "/x"}, {"A=B", "c"}, {"X", "a\x00b"}, {"", ""}, {"9A", ""}, {"GIT_PROTOCOL", "version=2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		if envProblem(name, value) != "" {
			return
		}
		if name == "" || strings.ContainsAny(name, "=\x00") || strings.Contains(value, "\x00") {
			t.Errorf("accepted malformed %q=%q", name, value)
		}
		if strings.HasPrefix(name, "LD_") || deniedEnvNames[name] {
			t.Errorf("accepted reserved %q", name)
		}
	})
}

// FuzzSessionRequest feeds arbitrary payloads to the request handlers that
// parse client data without starting a job (so not exec, shell or
// subsystem); none may panic.
func FuzzSessionRequest(f *testing.F) {
	types := []string{"pty-req", "window-change", "env", "signal", "x11-req", "bogus"}
	f.Add(uint8(0), ssh.Marshal(ptyRequestMsg{Term: "xterm", Columns: 80, Rows: 24}))
	f.Add(uint8(1), ssh.Marshal(windowChangeMsg{Columns: 1 << 31, Rows: 1}))
	f.Add(uint8(2), ssh.Marshal(envMsg{Name: "FOO", Value: "bar"}))
	f.Add(uint8(3), ssh.Marshal(signalMsg{Signal: "TERM"}))
	f.Add(uint8(5), []byte{0, 0, 0, 200, 1})
	f.Fuzz(func(t *testing.T, typ uint8, payload []byte) {
		log := slog.New(slog.DiscardHandler)
		s := &session{c: &connection{log: log, permitPTY: true}, log: log, done: make(chan struct{})}
		// Twice, so requests meet the state the first one left.
		for range 2 {
			ok, then := s.handle(&ssh.Request{Type: types[int(typ)%len(types)], Payload: payload})
			if then != nil {
				t.Fatalf("request %q started a job", types[int(typ)%len(types)])
			}
			_ = ok
		}
		if len(s.env) > maxEnvVars || s.envBytes > maxEnvBytes {
			t.Errorf("env grew past its limits: %d vars, %d bytes", len(s.env), s.envBytes)
		}
	})
}

// FuzzSFTPRequest feeds arbitrary request packets to the SFTP filter, with
// no file open and a sink for the library: none may panic, and whatever
// it answers is whole packets. OPEN is left out: it would act on the file
// system.
func FuzzSFTPRequest(f *testing.F) {
	ext := func(name string, rest ...byte) []byte {
		return append(appendString([]byte{fxpExtended, 0, 0, 0, 7}, name), rest...)
	}
	f.Add([]byte{fxpRead, 0, 0, 0, 1, 0, 0, 0, 2, 'f', '1'})
	f.Add(ext("copy-data", 0, 0, 0, 2, 'f', '1'))
	f.Add(ext("limits@openssh.com"))
	f.Add(ext("fsync@openssh.com", 0, 0, 0, 2, 'f', '1'))
	f.Add(ext("users-groups-by-id@openssh.com", 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 || body[0] == fxpOpen {
			return
		}
		var out bytes.Buffer
		client := struct {
			io.Reader
			io.Writer
		}{strings.NewReader(""), &out}
		flt := newSFTPFilter(context.Background(), client, io.Discard, "")
		_, _ = flt.handle(body)
		for rest := out.Bytes(); len(rest) > 0; {
			if len(rest) < 4 || uint64(len(rest)-4) < uint64(binary.BigEndian.Uint32(rest)) {
				t.Fatalf("reply is not whole packets: %x", out.Bytes())
			}
			rest = rest[4+binary.BigEndian.Uint32(rest):]
		}
	})
}
