// Package api is the contract of a node's HTTP API (port 5000) outside the
// vdisk and flist routes: the routes and JSON shapes of the cluster,
// membership, tokens, pools, the generic key-value namespace, the chunk
// store, and the node-to-node internal routes. The handlers (orchestrator,
// node) register these routes and answer with these types; the typed
// client (orchestrator/client) calls the same routes and decodes the same
// types, so the two cannot drift apart.
//
//	mux.Handle(api.GetCluster.Pattern(), h)          // server
//	c.Do(ctx, api.GetNode.Method, api.GetNode.URL(id), nil, &n) // client
//
// The vdisk routes are in blockd/vdiskapi, the hub's in flist/hub.
// Routes lists every route declared here (the route × role test in node
// checks each one's authentication).
package api
