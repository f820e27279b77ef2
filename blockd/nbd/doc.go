// Package nbd is an NBD (Network Block Device) server: it serves any number
// of Exports to clients such as qemu, nbdinfo, nbdcopy, nbdfuse and fio
// over the fixed newstyle protocol (NetworkBlockDevice/nbd doc/proto.md).
//
// What it speaks:
//
//   - Handshake: fixed newstyle with and without NBD_FLAG_C_NO_ZEROES;
//     options EXPORT_NAME, ABORT, LIST, INFO, GO (NBD_INFO_EXPORT, _NAME,
//     _DESCRIPTION, _BLOCK_SIZE), STARTTLS, STRUCTURED_REPLY,
//     LIST_META_CONTEXT and SET_META_CONTEXT (base:allocation); every other
//     option is answered NBD_REP_ERR_UNSUP. With Config.TLS clients may
//     upgrade; with Config.RequireTLS every option but STARTTLS and ABORT
//     is refused with NBD_REP_ERR_TLS_REQD until they do.
//   - Transmission: READ (simple replies, or structured replies with
//     OFFSET_DATA and OFFSET_HOLE chunks for aligned zero runs, and DF),
//     WRITE, FLUSH, FUA, TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO), CACHE
//     (the optional Cacher capability, else a no-op), BLOCK_STATUS
//     (base:allocation, REQ_ONE) and DISC.
//
// Guarantees:
//
//   - Requests of one connection are read by one goroutine and served
//     concurrently by up to Config.MaxInFlightRequests worker goroutines;
//     replies go out in completion order, each written whole. Small
//     requests of a command the Export has recently served fast (below
//     Config.InlineThreshold) are served by the reading goroutine itself,
//     which saves a goroutine hand-off per request (about a third of the
//     server's CPU per 4 KiB request on a memory export); a command that
//     turns slow goes back to the workers after one call. Buffers held
//     per connection are bounded by Config.MaxInFlightBytes: past it the
//     server stops reading the socket.
//   - Requests are validated before the Export sees them: the Export is
//     never asked for a range past its end, for zero bytes, for a write to a
//     read-only export, or for more than Config.MaxRequestSize bytes. Bad
//     requests get the error the spec prescribes (EINVAL; ENOSPC for writes
//     past the end; EPERM on read-only exports); Export errors are mapped
//     once (ErrNoSpace → ENOSPC, ErrNotFast → ENOTSUP, ErrReadOnly → EPERM,
//     anything else EIO). A panic in an Export fails that request with EIO
//     and is logged; the server and other clients go on.
//   - A client that sends garbage, a bad magic, or hangs up mid-request is
//     disconnected; nothing else is affected.
//   - NBD_CMD_DISC finishes the requests in flight, flushes the export and
//     closes. Shutdown does the same for every connection; Close is
//     immediate. Neither leaks goroutines: every Export call has returned
//     and every release func has run when they return.
//
// Usage:
//
//	exports := nbd.NewStaticExports()
//	exports.Add(memexport.New(1<<30), nbd.ExportInfo{Name: "disk", MultiConn: true})
//	srv, err := nbd.New(nbd.Config{Exports: exports, Registerer: reg})
//	ln, err := net.Listen("tcp", ":10809")
//	go srv.Serve(ctx, ln) // nbd://host:10809/disk
//	...
//	srv.Shutdown(ctx)
//
// Design notes. Replies are batched by combining: a worker appends its
// small reply to a per-connection buffer and, if no write is in progress,
// writes it at once; replies finishing during that write are written
// together by the same writer when it comes back, so under load one system
// call carries many replies, no worker waits for another's write, and a
// lone reply is never delayed. Large READ data is not copied: it goes out
// with writev. Holes in READ replies are found by comparing aligned blocks
// of the data read with zero (memequal stops at the first nonzero word, so
// data costs almost nothing) rather than by asking the Export, which keeps
// the Export contract small and also turns zeroes an Export did not know
// about into holes. The advertised block sizes are minimum 1, preferred
// ExportInfo.BlockSize (default 4096) and maximum Config.MaxRequestSize.
//
// Metrics (namespace zos_nbd): requests_total{command},
// request_errors_total{command,error}, request_duration_seconds{command},
// read_bytes_total, written_bytes_total, requests_in_flight, connections,
// connections_total, handshakes_total{result}, export_panics_total.
package nbd
