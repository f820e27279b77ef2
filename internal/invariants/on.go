//go:build invariants || race

package invariants

// Enabled: the checks run.
const Enabled = true
