// Package node is the zos node daemon (`zos node`): on one host it runs the
// control-plane member (package raft), the HTTP API (package orchestrator),
// and the data-plane servers, each listening on the node's bind address with
// the default ports of the design (Raft 9901, HTTP 5000, shard server 9900,
// NBD 10809, RESP 6379).
//
// Life of a node:
//   - bootstrap (--bootstrap): start a one-voter cluster, initialize it
//     (cluster id, secret, admin token) and add itself to the cluster map;
//   - join (--join ADDR --token T): start Raft empty, ask any member to admit
//     it (the member proxies to the leader), and wait until its replica has
//     caught up;
//   - restart (a --dir that already holds state): Raft replays the local log
//     and snapshots; --join and --bootstrap are ignored.
//
// The leader probes every member's /healthz; a member silent for DeadAfter
// is marked down in the cluster map (its data is then served degraded and
// rebuilt), and up again when it answers. Until it is marked down, chunk
// writes go on degraded and vdisk journal appends skip it (see
// chunkstore/erasure and chunkstore/journal); each node's store remembers
// what the chunks it wrote lack and rebuilds it when the node answers again,
// asking every node for a heal pass (POST /internal/v1/store/heal) when it
// could not remember them all. Every node reports its disk usage
// periodically. Close shuts everything down in reverse order; a leader first
// hands leadership over so the cluster does not wait for an election timeout.
//
// The RESP port is the node agent (package node/agent, 0-core's job
// protocol): admin tokens and the cluster secret authenticate; jobs, host
// info, bridges and flist mounts (through the node's shared chunk cache in
// DIR/flist-cache) are its commands. Close kills and reaps every job before
// the mounts and the keyspace go.
package node
