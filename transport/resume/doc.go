// Package resume keeps a session's byte stream between the entry proxy and
// the agent whole when a hop between them fails.
//
// A session's path is a chain of hops: the agent's tunnel channel, and when
// the tunnel is on another proxy, a peer data stream in front of it. Any of
// them can break while both ends live on: a peer proxy is killed, an
// agent's tunnel drops, a peer link is cut. The two ends of the session,
// the entry proxy (which holds the user's SSH channel) and the agent (which
// holds the node's SSH server or the upstream socket), each wrap the
// session's stream in a [Conn]. A Conn counts every byte both ways and
// keeps what it sent until the other end acknowledges it; when the hop
// fails, the entry proxy dials the same agent again through any path it
// has (the [Client]'s Redial), proves the new hop belongs to the session,
// and both ends carry on from the last byte the other received. The user's
// OpenSSH client sees a pause, never an error.
//
// # The wire
//
// A hop begins with a handshake, then carries frames both ways.
//
//	Hello   (entry → agent)  "WRS1" mode:u8 idlen:u8 id received:u64 window:u32 detach_ms:u32 gen:u32 token:[32]
//	Welcome (agent → entry)  "WRS1" status:u8 received:u64 msglen:u16 msg
//
//	data   0x01 len:u32 bytes   the next len bytes of the stream (1 ≤ len ≤ 32 KiB)
//	ack    0x02 delivered:u64       bytes the receiver's reader has taken
//	fin    0x03 total:u64       the sender will write no more; total is the stream's length
//	ping   0x04                 keeps a quiet hop heard
//	close  0x05                 the sender closed the session
//	note   0x06 len:u16 text    words for the user, from the entry proxy (at most 512 bytes)
//
// Mode 1 starts a session: token is a fresh 32-byte secret the entry proxy
// drew for it, carried over the authenticated links only (the peer link's
// mutual TLS, the agent's SSH tunnel). Mode 2 resumes one: gen counts the
// entry proxy's attempts and token is HMAC-SHA256(secret, "warren-resume\0"
// id "\0" agent id "\0" gen). The agent accepts a resume only with a token
// for its own identity and a gen above every gen it accepted before: a
// forged token, one meant for another agent, and a replayed one are all
// refused. received, in both directions, is how many bytes of the other
// side's stream this end holds: each end resends from there.
//
// # Flow control
//
// The replay buffer is the flow-control window, never more: a writer may
// have at most window bytes that the other end's reader has not taken, and
// blocks beyond that, whether the hop is slow, the reader is slow, or no
// hop is attached at all (a full buffer is backpressure, not a dead peer).
// A receiver holds at most window bytes it has not handed to its reader; a
// sender that overruns it breaks the protocol and ends the session.
//
// # Failure
//
// A hop that fails (a read or write error) is dropped at once. A hop that
// is alive but silent is dropped once nothing has been heard on it for
// silentAfter: each end sends a ping whenever it has written nothing for
// pingEvery. A detached session waits for a new hop for its detach time
// (the Hello's detach_ms), then ends with [ErrDetached].
package resume
