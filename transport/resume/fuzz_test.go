package resume

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// FuzzHello: no Hello from the network crashes the agent, and every one it
// accepts is well formed and reads back the same.
func FuzzHello(f *testing.F) {
	good := hello{mode: modeStart, id: "s-1", window: DefaultWindow, detach: time.Minute}
	f.Add(good.marshal())
	f.Add(hello{mode: modeResume, id: "x", received: 99, window: minWindow, detach: time.Second, gen: 3}.marshal())
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	f.Add([]byte("WRS1\x02\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHello(bytes.NewReader(b))
		if err != nil {
			return
		}
		if h.id == "" || len(h.id) > maxID || (h.mode != modeStart && h.mode != modeResume) {
			t.Fatalf("accepted a bad hello %+v", h)
		}
		again, err := readHello(bytes.NewReader(h.marshal()))
		if err != nil || again != h {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, h)
		}
	})
}

// FuzzWelcome: no Welcome crashes the entry proxy.
func FuzzWelcome(f *testing.F) {
	f.Add(welcome{status: statusOK, received: 5}.marshal())
	f.Add(welcome{status: statusRefused, msg: "no"}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := readWelcome(bytes.NewReader(b))
		if err == nil && len(w.msg) > 4*maxMsg+2 { // quoted: \xNN at worst
			t.Fatalf("message of %d bytes", len(w.msg))
		}
	})
}

// FuzzFrames feeds arbitrary frames to a session's end: it never crashes,
// never holds more than its window, and ends on a broken frame.
func FuzzFrames(f *testing.F) {
	frame := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	f.Add(frame([]byte{fData}, u32(3), []byte("abc"), []byte{fFin}, u64(3)))
	f.Add(frame([]byte{fAck}, u64(0), []byte{fPing}, []byte{fClose}))
	f.Add(frame([]byte{fData}, u32(maxData+1)))
	f.Add(frame([]byte{fFin}, u64(7)))
	f.Add([]byte{9, 9, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		const window = minWindow
		c := newConn("fuzz", window)
		near, far := net.Pipe()
		defer far.Close()
		if _, err := c.attach(near, 0, nil); err != nil {
			t.Fatal(err)
		}
		go func() { // the session's own frames: read and dropped
			buf := make([]byte, 4096)
			for {
				if _, err := far.Read(buf); err != nil {
					return
				}
			}
		}()
		far.SetWriteDeadline(time.Now().Add(2 * time.Second))
		far.Write(b)
		if n := c.Buffered(); n > window {
			t.Fatalf("holds %d bytes, window %d", n, window)
		}
		c.Close()
		c.fail(net.ErrClosed)
		<-c.Done()
	})
}
