// Package invariants says whether expensive internal consistency checks
// are compiled in (pebble's internal/invariants): they are in builds with
// the invariants build tag or the race detector, which `make test` and
// `make check` use. Code guards its checks with `if invariants.Enabled`,
// and the compiler drops them from other builds.
package invariants
