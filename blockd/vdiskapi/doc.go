// Package vdiskapi is the contract of the vdisk HTTP API: its routes and
// JSON shapes. blockd.RegisterHTTP serves these routes with these types,
// and orchestrator/client calls them, so the handler and the client cannot
// drift apart. It depends on nothing but internal/size and internal/route.
//
// Sizes in request bodies are size.Bytes: a number of bytes or a string
// like "10G". Routes lists every route (the route × role test in node
// checks each one's authentication: any valid token may call them).
package vdiskapi
