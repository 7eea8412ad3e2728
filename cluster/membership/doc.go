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
//	wan      1s / 500ms       2 (1)                 100ms   15s        5s   9   across regions: see below
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
// # Across regions
//
// All proxies of all regions form one gossip pool. memberlist has one set
// of timings per pool, and a suspicion spreads to every member, so the
// proxies of other regions see a death within 0.1-0.2 s of those in its
// own: in one pool, detection is the same inside a region and across.
// `warren bench gossip` measures it (bench/RESULTS.md has the run): 3
// regions × 3 proxies on the emulated WAN, 150 ms round trips between
// regions, 1 ms inside, 1% loss on every link, 300 TCP connections a
// second across regions; false deaths over 10 minutes, then 6 proxies
// stopped without leaving, one at a time (p50 / max of the 48 observers,
// same region and other regions alike):
//
//	timings                            false deaths  suspicions   detected p50 / max
//	lan     500ms / 250ms, 3 (1)       1, 1, 1, 94*  10-11, 196*  2.2-2.5 / 3.5-3.8 s
//	        the same, maximum 2 or 3   0, 2          21-22        2.4-2.7 / 5.4-6.0 s*
//	        probe timeout 400ms        8             161          2.7 / 3.7 s
//	wan     1s / 500ms, 2 (1)          0, 7*         0, 40*       3.3-4.1 / 5.2-5.5 s
//	memberlist's WAN (the old wan):
//	        5s / 3s, 6 (6)             0, 0, 0       0            38-40 / 41-48 s
//
// (Three runs, a number per cluster; * with the machine overloaded by other work, load 10-14 on
// 2 cores and the bench's own timers up to 1 s late: lan then declared
// live proxies dead in bursts, wan twice, the old wan never.)
// Every probe that fails raises a suspicion the live proxy must refute;
// on a quiet machine, each false death was a single proxy whose own timer ran out before
// the refutation reached it. A failed direct probe is retried through 3
// other proxies and over TCP in the rest of the probe interval, and across
// regions that takes two round trips (300 ms): lan leaves 250 ms, so
// about 1 in 20 of the ~200 direct probes lost in 10 minutes became a
// suspicion; a 400 ms timeout leaves 100 ms and raised 16 times as many;
// wan leaves 500 ms and raised none. Lifeguard's confirmation-driven
// window (a maximum of 2 or 3) did not measurably help (0 and 2 false
// deaths).
//
// So wan is for proxies in several regions: no false deaths on a quiet
// machine (7 against lan's 94 on an overloaded one), and a dead proxy
// seen everywhere in 3.3-4.1 s (p50), 5.5 s at most: within the 6 s goal
// across regions, not the 3 s goal inside one. lan meets 3 s at the
// median only (its maximum depends on how soon the dead proxy is first
// probed), and lost a live proxy about once in 10 minutes at 150 ms and
// 1% loss. Hence a second pool, as Consul does.
//
// # A pool per region
//
// With Config.RegionBindAddr, each proxy also runs a pool of its own
// region's proxies (RegionProfile's timings, lan by default: its probes
// never cross an ocean). It needs no seeds: every proxy advertises its
// region pool's address in Meta.RegionGossip, and the region pool's
// rejoin loop joins the addresses the cluster pool's members of the
// region advertise. A proxy of another region is refused there (an
// AliveDelegate: the pool's verdicts are trusted for the region's
// proxies only). The view that Members and Events give is the cluster
// pool's, with one rule:
//
//   - when the region pool declares a proxy of this region dead (or
//     left) while the cluster pool still lists it, the proxy is taken out
//     at once with its EventLeave;
//   - it comes back, with an EventJoin, when it is alive in the region
//     pool again (it refuted a false verdict, or restarted and rejoined),
//     or when the cluster pool reports a new join of it;
//   - the cluster pool's own leave of a proxy already taken out, and its
//     updates meanwhile, raise no second event.
//
// So the region's proxies see a death there within the region pool's
// timings, and the other regions within the cluster pool's; a false
// verdict of the region pool costs the proxy a leave and a join, as a
// false death in one pool does. The region pool's events arrive through
// its own queue, after the fact; one its current view contradicts is
// stale and ignored. Leave leaves both pools at once; Close closes both.
// bench gossip measures "wan+region" (RegionPoolVariant) beside wan.
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
