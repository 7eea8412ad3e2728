package bench

import (
	"testing"
)

// TestGossipTiny: the gossip scenario's smoke test: a cluster of 9
// proxies in 3 regions forms over the emulated WAN, survives a short soak
// under a storm, and sees one proxy stopped. It needs root and network
// namespaces: it skips without them unless CI says it must run. The
// figures are not checked: timings belong in RESULTS.md, not in tests.
func TestGossipTiny(t *testing.T) {
	t.Parallel() // waits on the emulated WAN's delays, mostly: beside the others
	needNetns(t)
	rep := runTiny(t, "gossip")
	sum := rep.Tables[0]
	if len(sum.Rows) != len(TinyGossipConfig().Variants) {
		t.Fatalf("%d variants in the summary, want %d", len(sum.Rows), len(TinyGossipConfig().Variants))
	}
	if len(rep.Tables) < 2 || len(rep.Tables[1].Rows) != TinyGossipConfig().Kills {
		t.Fatalf("want one row per kill in the kills table; tables %d", len(rep.Tables))
	}
	for _, row := range rep.Tables[1].Rows {
		if row[3] == "-" {
			t.Errorf("kill %v: nobody saw the stopped proxy dead", row)
		}
	}
}

func TestParseVariantRegionPool(t *testing.T) {
	name, c, err := parseVariant(RegionPoolVariant)
	if err != nil || name != "wan+region" || c.Profile != "wan" || c.RegionProfile != "lan" || c.RegionBindAddr == "" {
		t.Errorf("parseVariant(%q) = %q, %+v, %v", RegionPoolVariant, name, c, err)
	}
	if _, _, err := parseVariant("wan/region=fast"); err == nil {
		t.Errorf("a region pool with an unknown profile was accepted")
	}
}
