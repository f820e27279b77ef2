// Package pki is the cluster's certificate authority and the node
// certificates it issues: the TLS half of zos's security (DESIGN.md,
// Security).
//
// # Where the CA key lives
//
// The CA key is never stored anywhere. It is derived, with HKDF-SHA256,
// from the cluster secret that OpInit puts in the Raft state at bootstrap
// (DeriveKey). Only the CA certificate (public) is kept in the replicated
// state (kv namespace "tls", key "ca") and in each node's data directory.
//
// The reason: every member already holds the cluster secret — it is what
// authenticates one node to another on /internal and, before TLS, on the
// shard protocol — so a member that has it is already trusted with the
// cluster's data and its control plane. Keeping a second root secret in
// Raft (the Consul way) would give no member less power than it has, add a
// key to every snapshot and log segment, and still not keep it off
// non-voters, which apply the same log. Deriving it means: one secret to
// protect, no extra state to replicate, and any member can sign (so
// rotation is local: each node re-issues its own certificate, no RPC).
// The cost is that rotating the CA means rotating the cluster secret.
//
// # How a node gets its certificate
//
// A node that bootstraps derives the CA, writes its certificate and issues
// its own node certificate. A node that joins (with the admin or a join
// token) sends a certificate request (CSR) with its join request; the
// member that admits it signs it (Consul's auto-encrypt) and answers with
// the certificate and the CA certificate, which the node stores under
// DIR/tls (ca.pem, node.pem, node-key.pem) and reuses on restart.
//
// # What is checked
//
// Node certificates carry the DNS name NodeName ("zos-node") besides the
// node's addresses and "localhost", and are valid for TLS server and client
// use. Links between nodes (Raft, the shard protocol, journal appends,
// forwarding and /internal) verify that the peer's certificate chains to
// the cluster CA and names NodeName — whatever address the peer was
// reached at (ClientConfig sets ServerName NodeName). Clients of the API
// (the CLI, curl) verify the node's address as usual.
//
// Holder keeps the current certificate and serves it through
// tls.Config.GetCertificate and GetClientCertificate, so a rotation
// (Holder.Set) takes effect on the next handshake without restarting a
// listener.
package pki
