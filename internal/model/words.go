package model

import (
	"fmt"
	"slices"
	"strings"
)

// Resource kinds.
const (
	KindSSH = "ssh"
	KindTCP = "tcp"
)

// Session strategies: how a proxy picks an agent for a new session among
// the healthy ones that serve the resource (proxy config session.strategy).
const (
	// StrategyDefault prefers an agent whose tunnel is on this proxy, then
	// spreads sessions among the others.
	StrategyDefault = "default"
	// StrategyRandom picks uniformly among the agents.
	StrategyRandom = "random"
	// StrategyLeastSessions picks the less loaded of two random agents.
	StrategyLeastSessions = "least_sessions"
	// StrategyNearest picks the agent with the lowest measured round trip.
	StrategyNearest = "nearest"
)

// Strategies are the session strategies, the default first.
var Strategies = []string{StrategyDefault, StrategyRandom, StrategyLeastSessions, StrategyNearest}

// CheckStrategy returns nil for a session strategy ("" is not one: the
// caller applies the default) and otherwise an error that lists them.
func CheckStrategy(s string) error {
	if slices.Contains(Strategies, s) {
		return nil
	}
	return fmt.Errorf("unknown strategy %s: use %s", Quote(s), orList(Strategies))
}

// A proxy's default ports (the listen addresses of its config): one
// source for the proxy's defaults and for harnesses that run each proxy
// alone on its own (emulated) host.
const (
	PortGossip       = "3020" // TCP and UDP
	PortPeer         = "3021"
	PortRegionGossip = "3022" // TCP and UDP: the region's pool (gossip profile wan)
	PortUser         = "3023"
	PortTunnel       = "3024"
	PortPeerFar      = "3025" // data streams from proxies of other regions
	PortHTTP         = "3080"
)

// Gossip profiles: the membership timing presets (proxy config
// gossip.profile); the numbers are in cluster/membership.
const (
	ProfileLAN   = "lan"   // the default
	ProfileWAN   = "wan"   // across regions
	ProfileLocal = "local" // one machine: tests and `warren dev`
)

// Profiles are the gossip profiles, the default first.
var Profiles = []string{ProfileLAN, ProfileWAN, ProfileLocal}

// CheckProfile returns nil for a gossip profile ("" is not one: the caller
// applies the default) and otherwise an error that lists them.
func CheckProfile(p string) error {
	if slices.Contains(Profiles, p) {
		return nil
	}
	return fmt.Errorf("unknown profile %s: use %s", Quote(p), orList(Profiles))
}

// orList is "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
