// Package buildinfo says which build of Warren runs, for the proxies' and
// agents' warren_build_info metrics.
package buildinfo

import "runtime/debug"

// Revision is the VCS revision the binary was built from, or "unknown"
// (a test binary, or a build outside a checkout).
func Revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
