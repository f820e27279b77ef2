// Package archtest holds the architecture rules of zos as tests
// (tailscale's tstest/deptest style), and the checkers they run over `go
// list` output:
//
//   - Layers: which parts may depend on which (the chunk store stands
//     alone, tests included; nothing imports cmd).
//   - Harness: localcluster, storetest, shardtest, journaltest, memexport,
//     testcluster and the bench/ packages are imported only by tests and
//     by bench/ (and cmd/zos wires bench/ into `zos bench`).
//   - No testing in the product: nothing `go list -deps ./cmd/zos` lists
//     imports package testing, but hashicorp/raft (its testing.go is part
//     of the package; TestingAllowed).
//
// TestRulesFail shows each checker failing on a deliberate bad import. Add
// a rule by extending Layers, Harness or TestingAllowed; `go test
// ./internal/archtest` checks the tree.
package archtest
