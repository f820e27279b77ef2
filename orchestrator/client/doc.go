// Package client is the Go client of the zos HTTP API (port 5000 on every
// node). The CLI uses it; so can anyone. It reads ZOS_ADDR and ZOS_TOKEN
// through FromEnv.
//
// Every route has a typed method: cluster and membership (ClusterStatus,
// Nodes, RemoveNode, Promote…), tokens, pools and the key-value namespace,
// the chunk store (PutBlob, GetBlob, StatBlob, StoreStatus, Scrub, GC,
// Pins…), vdisks (CreateVDisk, VDisks, Snapshot, Clone, Export, Import,
// Diff…) and, through Hub, the flist hub. The methods use the route
// constants and JSON types of orchestrator/api and blockd/vdiskapi, the
// same ones the handlers register and answer with. Do and Stream remain
// for callers that need a raw request.
//
// Errors the API answers are *Error (IsCode tests the code: not_found,
// exists, invalid, conflict, leased, unauthorized, forbidden…).
//
//	c := client.FromEnv()
//	st, err := c.ClusterStatus(ctx)
package client
