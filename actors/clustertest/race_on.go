//go:build race

package clustertest

// raceEnabled is true when built with -race.
const raceEnabled = true
