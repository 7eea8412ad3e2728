package peer

import (
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc/codes"
)

var (
	// ErrClosed is returned by a Stream's methods after its own Close, and
	// by Dialer.Open after Dialer.Close. It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("peer: use of closed stream or dialer: %w", net.ErrClosed)
	// ErrRefused is matched (errors.Is) by every [*RefusedError].
	ErrRefused = errors.New("peer refused the stream")

	errWriteClosed = fmt.Errorf("peer stream: write after CloseWrite: %w", net.ErrClosed)
	// errRemoteEnded is a Write's error once the other side ended the RPC,
	// the counterpart of EPIPE on a socket.
	errRemoteEnded = fmt.Errorf("peer stream: the other side ended the stream: %w", io.ErrClosedPipe)
)

// RefusedError is Open's error when the server was reached but did not
// accept the stream: its handler refused the token, the peer is not allowed,
// or the versions do not match. Reason is the server's own words.
type RefusedError struct {
	Addr   string
	Code   codes.Code
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("peer %s refused the stream: %s", e.Addr, e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// ProtocolError reports a frame that breaks the protocol.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "peer stream protocol error: " + e.Msg }
