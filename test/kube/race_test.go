//go:build race

package kube

// raceEnabled builds the meridian binary with -race as well.
const raceEnabled = true
