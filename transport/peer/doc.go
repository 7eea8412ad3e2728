// Package peer holds the links between proxies: mutual TLS with proxy
// identities, the per-session data streams, and the guard that makes
// protoactor remote's gRPC server safe to expose.
//
// Every proxy runs one gRPC server on its peer port. protoactor remote
// creates that server itself, so this package contributes to it through
// [ServerOptions]: TLS credentials that require a client certificate from the
// cluster CA, interceptors that check the calling proxy and refuse
// protoactor's two unimplemented unary calls (which would otherwise panic and
// kill the process), a recover for any other panic, keepalive enforcement,
// static flow-control windows, and an unknown-service handler that serves
// [StreamMethod] next to protoactor's own service. [DialOptions] is the
// matching client side for protoactor's connections; a [Dialer] keeps its own
// pool of connections for data streams so bulk bytes never queue behind (or
// in front of) control messages.
//
// # Protocol flow
//
// A data stream is one gRPC bidirectional stream on [StreamMethod]. Its
// messages are not protobuf: they travel with the content-subtype
// "warren-raw" (content-type application/grpc+warren-raw), whose codec puts a
// frame's bytes on the wire as they are. Every frame starts with a one-byte
// type:
//
//	'H' hello   client→server, first frame:  'H' version:uint8 token:bytes
//	'A' accept  server→client, first frame:  'A' version:uint8
//	'D' data    both ways:                   'D' payload (1..32768 bytes)
//	'E' EOF     server→client:               'E'   (no payload)
//
// The flow of one session:
//
//  1. The client opens the gRPC stream and sends hello with [Version] and the
//     token (1..1024 bytes) that names the session the server prepared.
//  2. The server checks the peer (mTLS chain, AllowPeer), the version, and
//     runs its [Handler]. The handler accepts by its first Read, Write or
//     CloseWrite (or [Accept]): the server sends accept. If the handler
//     returns first, the server ends the RPC with no frame, with the
//     handler's error as the status message (PermissionDenied unless the
//     error is a gRPC status with its own code); [Dialer.Open] returns that
//     as a [*RefusedError]. Open returns only after accept arrived.
//  3. Data frames flow both ways, each Write split into frames of at most
//     [MaxFrameData] bytes and sent at once (no batching delay: a 1-byte
//     Write is one frame on the wire right away).
//  4. Half-close. The client ends its direction with gRPC CloseSend
//     (HTTP/2 END_STREAM); the server's Read returns io.EOF. The server
//     cannot half-close a gRPC stream before its handler returns, so it
//     sends the 'E' frame; the client's Read returns io.EOF. Either
//     direction may end while the other keeps flowing.
//  5. End. The server handler returning ends the RPC (status OK, or the
//     handler's error, which the client's Read reports). A client Close after
//     both directions ended in-band waits in the background (bounded) for
//     that status, so data still in flight is delivered; otherwise Close
//     cancels the RPC (RST_STREAM) and both sides' pending calls fail.
//
// The client never sends 'E' (END_STREAM says it), and the server never
// sends hello; any other frame out of place is a [ProtocolError].
//
// Memory is bounded by HTTP/2 flow control, never by buffering here: a
// slow reader stops its writer after at most one stream window of unread
// bytes, and each stream holds at most one received frame beyond that (the
// connection-level window is acknowledged on receipt and bounds nothing
// unread). The windows depend on the path:
//
//   - Inside a region, and on every connection the server accepts or
//     protoactor dials: a static stream window of 1 MiB and connection
//     window of 4 MiB (BDP estimation off). Small windows keep few bulk
//     bytes queued in a shared link in front of a keystroke.
//   - A [Dialer]'s connections to another region ([WithFar]), one per
//     stream, set no window: gRPC's BDP estimation starts them at 64 KiB
//     and, while a stream is limited by its window, grows them to twice the
//     bytes received in one ping's round trip, up to 16 MiB. A download across an ocean is thus
//     not held to 1 MiB per round trip (7 MiB/s at 150 ms); a stalled
//     reader holds at most 16 MiB. Bytes sent to the far proxy (an upload)
//     are still held to its static 1 MiB window: the server's windows
//     are one setting for all its connections.
//
// Setting any window option turns gRPC's estimation off (grpc/grpc-go#9078
// and #9090 changed which options do); TestWindowFollowsThePath pins the
// behaviour of both kinds of connection.
//
// # Goroutines
//
// On the server a Handler runs in a goroutine of its own while gRPC's
// handler goroutine waits for it: a server cannot unblock its own pending
// gRPC Send or Recv except by ending the RPC, so a Close from any goroutine
// makes the waiting goroutine return at once, which fails the Handler's
// pending calls; the Handler then returns by itself. The client side needs
// no goroutine per stream; a Close after both directions ended in-band
// waits for the final status in one goroutine owned by the Dialer, which
// Dialer.Close ends and waits for.
package peer
