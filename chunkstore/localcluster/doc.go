// Package localcluster runs a whole chunk store cluster in one process:
// N shard servers on loopback addresses (127.0.0.x by default; tests take
// their package's range from internal/testcluster/loopback via Prefix),
// each over its own disk store, and an erasure store over them. Tests use
// it, and so does the store benchmark (bench/storebench) that `zos bench
// store` calls; nothing else may import it (internal/archtest). Nodes can
// be stopped (as if killed), restarted, marked down or removed, and added.
package localcluster
