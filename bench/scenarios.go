package bench

import (
	"context"
	"flag"
)

// Scenario is one benchmark as `warren bench NAME` runs it.
type Scenario struct {
	Name    string
	Summary string
	// Flags registers the scenario's settings on fs, with the defaults of
	// a full run (or of a tiny one, the smoke test CI runs), and returns
	// the function that runs it once fs is parsed.
	Flags func(fs *flag.FlagSet, tiny bool) func(ctx context.Context, env Env) (Report, error)
}

// Scenarios lists every scenario in the order `warren bench all` runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "path", Summary: "setup, round trip and throughput: Warren against ssh -J through stock sshd bastions", Flags: pathFlags},
		{Name: "interactive-under-load", Summary: "keystroke round trip while another session uploads through the same proxies", Flags: interactiveFlags},
		{Name: "setup-rate", Summary: "new sessions per second through a proxy and a peer hop, and CPU per session", Flags: setupRateFlags},
		{Name: "scale", Summary: "N agents with a real tunnel each on 3 proxies: memory per tunnel, connect time, route convergence, CPU", Flags: scaleFlags},
		{Name: "failover", Summary: "SIGKILL an agent, its tunnel's proxy, a forwarding proxy under load: route convergence and failed sessions", Flags: failoverFlags},
		{Name: "survival", Summary: "kill -9 of the proxy in the middle of many interactive sessions and large transfers (then of the agent's other proxy), against ssh -J b1,b2 when b2 dies; and a rolling restart of every proxy under load: sessions that survived, bytes checked end to end, stalls", Flags: survivalFlags},
		{Name: "region-loss", Summary: "SIGKILL a proxy, then a whole region, of 3 on the emulated WAN (as root) with 1,200 agents in fleets: re-homing times, new sessions by second, gossip health, the way home", Flags: regionLossFlags},
		{Name: "wan", Summary: "the emulated WAN (network namespaces, as root): measured round trip and throughput between every pair of regions against the configuration", Flags: wanFlags},
		{Name: "gossip", Summary: "membership in 3 regions over the emulated WAN (as root), 150 ms apart, 1% loss, a connection storm: false deaths and detection time per timing preset", Flags: gossipFlags},
		{Name: "regions", Summary: "users in every region to nodes in every region of the emulated WAN (as root): Warren by the nearest proxy, by one region's proxies, ssh -J a bastion, direct, and the network itself", Flags: regionsFlags},
		{Name: "wan-load", Summary: "a user in eu, a node in ap, 200 Mbit/s between them on the emulated WAN (as root): keystroke round trip idle and under an upload on the same route, and an ssh -L download against plain TCP; Warren against ssh -J a bastion", Flags: wanLoadFlags},
		{Name: "clients", Summary: "pgbench and redis-benchmark through ssh -L: Warren against a stock sshd bastion and direct", Flags: clientsFlags},
	}
}

// flagSet is a flag set for a scenario that reports errors, not exits.
func flagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet("warren bench "+name, flag.ContinueOnError)
}
