package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc/credentials"
)

// clientCreds is TLS client credentials that wait for the server's first
// bytes before handing the connection to gRPC.
//
// With TLS 1.3 a client finishes its handshake before the server has
// checked the client's certificate. A server that refuses the certificate
// sends an alert and closes; if gRPC writes its preface first, the kernel
// answers with a reset and the client reports "broken pipe" instead of the
// reason. Reading first gets the alert ("tls: certificate required",
// "unknown certificate authority"), and costs nothing: an HTTP/2 server
// speaks first (SETTINGS) and gRPC waits for that before the link is ready.
type clientCreds struct {
	credentials.TransportCredentials
}

func (c clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(handshakeTimeout)
	}
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil, errors.New("the peer said nothing after the TLS handshake")
		}
		return nil, nil, fmt.Errorf("the peer refused the connection after the TLS handshake: %w", err)
	}
	return &peekedConn{Conn: conn, buf: buf[:n]}, info, nil
}

func (c clientCreds) Clone() credentials.TransportCredentials {
	return clientCreds{c.TransportCredentials.Clone()}
}

// peekedConn returns the bytes read ahead before reading on.
type peekedConn struct {
	net.Conn
	buf []byte // only gRPC's reader goroutine reads
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
