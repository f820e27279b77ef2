// Package archtest holds the architecture rules of zos as a test: which
// packages may import which (tailscale's tstest/deptest style).
package archtest
