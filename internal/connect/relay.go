package connect

import (
	"context"
	"errors"
	"io"
	"net"
)

// Relay copies in to conn and conn to out until the proxy ends the
// connection (or ctx ends), half-closing conn when in ends: what an ssh
// ProxyCommand does with its stdin and stdout. It returns nil when the
// proxy closed the connection cleanly.
//
// The goroutine reading in may stay blocked in a read of stdin after Relay
// returns (a read of a pipe cannot be cancelled); it ends with the
// process, which exits once Relay returns.
func Relay(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		_, err := io.Copy(conn, in)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
			return
		}
		conn.Close()
	}()
	_, err := io.Copy(out, conn)
	conn.Close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
