//go:build race

package peer

// raceEnabled is true when the race detector is on; the largest transfers
// are cut down or skipped then.
const raceEnabled = true
