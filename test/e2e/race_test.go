//go:build race

package e2e

// raceEnabled makes TestMain build the meridian binary with -race as well.
const raceEnabled = true
