// Package revtunnel is the wire protocol between an agent and a proxy: the
// agent dials out, and the proxy uses the resulting SSH connection to reach
// the resources the agent serves.
//
// # Protocol flow
//
// The agent is the SSH client, the proxy the SSH server. The proxy presents
// a host key with a host certificate from the cluster host CA; the agent
// checks it against the CA it stored when it joined, or, on its first
// connection, against a CA pin (SHA256 fingerprint) from its config.
//
//  1. Join (first start only). User "join", password = a join token. The
//     agent sends the global request "join@warren.dev" (JoinRequest) and the
//     proxy answers with a JoinResponse: the agent's id and a host
//     certificate for the agent's public key. The agent stores both and
//     disconnects.
//  2. Tunnel. User = agent id, public-key auth with the agent's host
//     certificate. The agent sends "hello@warren.dev" (Hello) and gets a
//     HelloReply: the proxy's id, a renewed host certificate, the current
//     proxy set.
//  3. Heartbeats. The agent sends "heartbeat@warren.dev" (Heartbeat) with
//     every resource it serves and its health, at an interval and at once
//     on change; the proxy answers each, so the agent also learns the proxy
//     is alive.
//  4. Keepalive. The proxy sends "keepalive@openssh.com" with want-reply;
//     a tunnel that misses KeepaliveCount replies in a row is closed.
//  5. Dial. For every session the proxy opens a channel of type
//     "dial@warren.dev" whose extra data is a DialRequest. The agent either
//     accepts it and joins it to the resource (its embedded SSH server or
//     a TCP upstream), or rejects it with a reason the user will read. A
//     DialRequest with Resume set carries a resumable session
//     (transport/resume): ResumeStart begins one, whose channel opens
//     with the entry proxy's Hello; ResumeAgain is a new hop of one the
//     agent holds, which it rejects when it does not.
//  6. Login. When a user logs in to the agent's SSH server, the agent sends
//     "login@warren.dev" (Login, no reply) so the proxy's audit log records
//     the login the session used.
//  7. Proxy set. The proxy sends "proxies@warren.dev" (ProxySet, no reply)
//     whenever the cluster's proxies change, so agents re-home to live
//     proxies and, in mesh mode, follow joins and leaves. A proxy that is
//     shutting down sends one without itself, marked Leaving: a peering
//     slot opens its tunnel elsewhere first, then withdraws its routes
//     here with an empty heartbeat.
//  8. Definitions. The proxy sends "definitions@warren.dev" (Definitions,
//     no reply) whenever the cluster's dynamic resources change; the hello
//     reply carries them too. Agents serve those their label watchers match.
//  9. Recordings. The agent opens a "recording@warren.dev" channel per
//     recording it uploads (RecordingOffer, with the RecordingTicket the
//     dialing proxy put in the DialRequest), sends the cast and reads one
//     UploadResult line; see recording.go.
//
// A proxy with too many connections still in their handshake turns a new
// one away before the SSH version exchange: it writes one busy line,
// "warren-busy retry-after-ms=NNN" (RFC 4253 §4.2 allows lines before the
// version line), and closes. Dial and Join then fail with a *BusyError:
// the agent tries the same proxy again after a bounded wait instead of
// taking it for failed (see busy.go for the form and what it may cost).
//
// Every payload is one JSON object; unknown fields are ignored, so either
// side can add fields without breaking the other.
package revtunnel
