package peer

import (
	"context"
	"io"
	"testing"
)

// BenchmarkStream measures one data stream over loopback with mutual TLS:
// bulk throughput in 32 KiB writes to a draining handler, and the round trip
// of one byte through an echoing handler.
func BenchmarkStream(b *testing.B) {
	ca := newCA(b)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		defer s.Close()
		buf := make([]byte, 32<<10)
		if token == "sink" {
			if _, err := io.CopyBuffer(io.Discard, onlyReader{s}, buf); err != nil {
				return err
			}
			return s.CloseWrite()
		}
		return echoHandler(token)(ctx, peerID, token, s)
	}
	addr, _ := startServer(b, ServerConfig{Identity: newIdentity(b, ca, "proxy-b"), Handler: handler})
	d := newDialer(b, newIdentity(b, ca, "proxy-a"))

	b.Run("bulk32KiB", func(b *testing.B) {
		s := mustOpen(b, d, addr, "sink")
		buf := make([]byte, 32<<10)
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for range b.N {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		// Done when the handler has read it all.
		if err := s.CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, s); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
	})

	pingpong := func(b *testing.B) {
		s := mustOpen(b, d, addr, "echo")
		buf := make([]byte, 1)
		b.ResetTimer()
		for range b.N {
			if _, err := s.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(s, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		s.Close()
	}
	b.Run("pingpong1B", pingpong)

	// The same round trip while another session on the same connection
	// pushes bulk data: keystrokes must not queue behind an scp.
	b.Run("pingpong1B_underBulk", func(b *testing.B) {
		bulk := mustOpen(b, d, addr, "sink")
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 32<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := bulk.Write(buf); err != nil {
					return
				}
			}
		}()
		pingpong(b)
		close(stop)
		bulk.Close()
		<-done
	})
}
