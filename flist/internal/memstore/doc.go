// Package memstore is an in-memory chunkstore.Store for the flist packages'
// tests: chunkstore/mem with counters and an outage switch. Production
// code uses the real chunk store.
package memstore
