// Package e2e holds the end-to-end tests of zos: real `zos node` processes
// on loopback addresses (and in network namespaces for partitions), driven
// through the real CLI and HTTP API. It has no non-test code.
package e2e
