// Package model is Warren's vocabulary: the names, rules and record types
// that more than one part of Warren speaks, with nothing behind them.
//
// It holds
//
//   - the rules for what operators and the network may name: agent, proxy,
//     resource and role names, label keys and values, name globs, and
//     the quoting of untrusted names for messages (names.go);
//   - the fixed words of configuration: resource kinds, session
//     strategies and gossip profiles, each with its one check
//     (words.go);
//   - the records that travel between packages: resources and agents as
//     routed (Resource, Agent), dynamic resource definitions and their
//     selectors (Definition), and the JSON shapes of the proxy's API that
//     clients decode (MemberStatus, Summary).
//
// Storage and wire packages convert to and from these types at their
// edges; clients (cmd, bench) import model to decode what proxies send
// rather than the actor packages that produce it. Model imports nothing of
// Warren's, so every package may import it.
package model
