// Package hub is the flist hub, after 0-hub: HTTP handlers that turn
// uploaded archives (tar, tar.gz, tar.zst, docker save, OCI archive) into
// flists, list, inspect, download, merge and delete them, and serve chunks
// by Ref so a machine outside the cluster can mount an flist over HTTP.
// The node mounts it on its HTTP API (port 5000):
//
//	h := hub.New(hub.Config{Store: store, Registry: reg, Authenticate: auth})
//	h.Register(mux)
//
// Routes are listed on Hub.Register. Reads are public; writes need
// Authenticate to accept the request, and go to the caller's own
// repository ("me" = Identity.User) unless the caller is an admin naming
// another with ?repo=. Device nodes are accepted from admins only.
// Responses use 0-hub's envelope: {"status": "success", "payload": ...} or
// {"status": "error", "message": ...} with a matching HTTP status.
//
// Dependencies come in through Config as small interfaces: the chunk store
// (chunkstore.Store), the Registry (repo/name -> Entry; the node implements
// it over Raft, MemRegistry is in memory) and the Authenticator. Deleting an
// flist only unregisters it: its chunks are collected by the chunk store's
// garbage collector once no registered flist references them.
//
// Client is the other side: a chunkstore Fetcher, Receiver and Statter over
// the chunk endpoints (verifying every fetched chunk), plus the flist API
// (UploadArchive, UploadFlist, Push, Merge, List, Inspect, Delete, Open).
// Network failures and 5xx answers are chunkstore.ErrUnavailable
// (transient), 404 is ErrNotFound.
package hub
