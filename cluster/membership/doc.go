// Package membership is the proxies' gossip membership: which proxies are
// alive, where to reach them (Meta), and when one joins, changes or goes.
// It wraps hashicorp/memberlist (SWIM with Lifeguard) behind a small API
// so that the rest of Warren never sees memberlist's types.
//
// # Lifecycle
//
// New(cfg) checks the config; Start binds the gossip port (TCP and UDP),
// joins whichever seeds answer and otherwise runs alone; Leave tells the
// others this proxy is going (they see EventLeave "left" within a gossip
// round); Close stops everything, without a leave message when Leave was
// not called (the others then detect a failure, as for a crash).
//
// Events delivers every join, update and leave in order through an
// unbounded queue, so memberlist's callbacks, which run under its node
// lock, never block. Members is the current view, kept from the same
// callbacks. memberlist does not report suspicion to delegates: a suspect
// member stays listed as Alive until it is declared dead.
//
// # Staying joined
//
// A background loop runs every RejoinInterval (default 2s):
//   - while alone, it retries every seed each time (a proxy may start
//     before its seeds);
//   - otherwise it retries, with backoff to 30s, seeds that are not members
//     (two groups that formed while their seeds were down merge) and
//     members declared dead in the last 24h (a healed partition: memberlist
//     forgets the dead after GossipToTheDeadTime and never probes them
//     again, so without this the two sides would stay apart for good);
//   - when the loop itself wakes far too late (the process was paused,
//     e.g. SIGSTOP, or starved), it pushes and pulls state with every
//     seed and member at once. The others may have declared this proxy
//     dead or forgotten it; the exchange re-adds it, or makes it refute
//     the verdict with a higher incarnation.
//
// After Leave the loop stops rejoining.
//
// # Security and identity
//
// With SecretKey set, every packet and stream is AES-GCM encrypted and
// anything unencrypted or under another key is refused both ways
// (GossipVerifyIncoming/Outgoing). Such a refused join is logged as an
// error that names the seed and gossip.secret_key (ErrKeyMismatch), and
// retried. Without a key a warning is logged once per Start.
//
// The ProxyID is memberlist's node name. Two proxies with the same id at
// different addresses do not replace each other: memberlist keeps the
// first, and both sides log an error naming both addresses. A proxy that
// crashed and comes back on another address takes over its id once the
// old entry is declared dead.
//
// # Timings
//
// A dead proxy is noticed about (next probe of it) + ProbeInterval (the
// direct and indirect probes fail) + SuspicionMult × max(1, log10(n)) ×
// ProbeInterval (time to refute a suspicion) + a gossip round. The
// profiles, and the time until the last surviving proxy saw EventLeave
// "dead" after another proxy was killed, measured on loopback (2 cores,
// 10 runs each, min/median/max):
//
//	profile  probe / timeout  suspicion mult (max)  gossip  push/pull  TCP  n   detected
//	lan      500ms / 250ms    3 (1)                 100ms   15s        3s   3   2.40 / 2.41 / 2.90 s
//	                                                                        8   2.29 / 2.79 / 3.40 s
//	                                                                        16  2.41 / 2.60 / 3.01 s (6 runs)
//	local    200ms / 100ms    3 (4)                 50ms    5s         1s   3   0.95 / 0.96 / 1.16 s
//	                                                                        8   0.87 / 1.25 / 1.67 s
//	wan      5s / 3s          6 (6)                 500ms   60s        30s  3   39.5 s (1 run; memberlist's WAN defaults)
//
// A graceful Leave was seen by the others after about 0.2 s (lan) and
// 60 ms (local); Leave returns about then.
//
// "lan" sets the maximum suspicion multiplier to 1: the suspicion window
// is fixed at 1.5 s × max(1, log10(n)) instead of starting up to 4-6 times
// longer and shrinking only as other members confirm the suspicion. With a
// maximum of 4, 8 proxies sometimes took 5.8 s, past the 5 s target; with
// 1 the formula gives about 4 s at 100 proxies. The price: a proxy
// that stalls for more than ~1.5 s (a long GC pause, an overloaded host)
// cannot refute in time and is declared dead, then rejoins within a
// gossip round of waking (EventLeave "dead", then EventJoin). A suspicion
// multiplier of 2 detects in about 1.9 s but leaves only 1 s to refute.
// "local" keeps memberlist's confirmation-driven window because busy test
// machines stall more than real proxies.
//
// # Limits
//
// memberlist v0.7.0 hands its EventDelegate a *Node that is the first
// field of its unexported nodeState, and never fills Node.State; the
// leave reason (dead or left) and the incarnation are read from that
// struct (see stateOf). The tests for ReasonLeft and for incarnations
// catch a layout change when memberlist is upgraded. Member.Incarnation is
// the value at the member's last event: refutations alone raise none.
package membership
