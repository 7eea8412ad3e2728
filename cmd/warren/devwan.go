package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/regions"
	"github.com/warren-proxy/warren/internal/wan"
)

// wanDelays are one-way delays between well-known regions, about half the
// round trips between the clouds' regions of those names; other pairs
// take wanDefaultDelay.
var wanDelays = map[[2]string]time.Duration{
	{"us", "eu"}: 40 * time.Millisecond,
	{"us", "ap"}: 60 * time.Millisecond,
	{"eu", "ap"}: 90 * time.Millisecond,
}

const wanDefaultDelay = 50 * time.Millisecond

// runDevWAN runs a multi-region dev cluster in the emulated WAN (package
// internal/wan): every proxy, agent and user host in a network namespace
// of its own, real warren processes (this binary), until ctx ends.
func runDevWAN(ctx context.Context, dir string, names []string, proxies int, log *slog.Logger) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--wan runs this binary on the emulated hosts: %w", err)
	}
	dir, err = filepath.Abs(filepath.Join(dir, "wan"))
	if err != nil {
		return err
	}
	// A fresh cluster each time: the emulated addresses are new.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	delays := map[[2]string]time.Duration{}
	for i, a := range names {
		for _, b := range names[i+1:] {
			d, ok := wanDelays[[2]string{a, b}]
			if !ok {
				d, ok = wanDelays[[2]string{b, a}]
			}
			if !ok {
				d = wanDefaultDelay
			}
			delays[[2]string{a, b}] = d
		}
	}
	log.Info("starting the emulated WAN and the cluster", "regions", strings.Join(names, ","), "dir", dir)
	c, err := regions.Start(ctx, regions.Spec{
		Bin: exe, Dir: dir, Regions: names, ProxiesPerRegion: proxies, AgentsPerRegion: 1,
		Delays: delays, Inside: 500 * time.Microsecond,
	})
	if err != nil {
		if wan.Unavailable(err) {
			return fmt.Errorf("--wan needs network namespaces and TUN devices (root, iproute2, /dev/net/tun): %w", err)
		}
		return err
	}
	defer c.Close()
	var matrix strings.Builder
	for i, a := range names {
		for _, b := range names[i+1:] {
			fmt.Fprintf(&matrix, "  %s-%s %v one way\n", a, b, delays[[2]string{a, b}])
		}
	}
	first, last := names[0], names[len(names)-1]
	fmt.Printf(`Warren dev cluster is up in the emulated WAN: regions %[1]s (state and logs in %[2]s).
Between regions (0.5 ms inside one):
%[3]s
Users run on the host REGION-user; for example, from %[4]s to the node of %[5]s:

  ip netns exec %[6]s ssh -F %[7]s -J proxy-%[4]s-1 node-%[5]s-1 'echo hi'
  ip netns exec %[6]s ssh -F %[7]s proxy-%[4]s-1 status

Press Ctrl-C to stop (every process, namespace and device goes with it).
`, strings.Join(names, ","), dir, matrix.String(), first, last, c.Net.Namespace(first+"-user"), c.SSHConfig)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
