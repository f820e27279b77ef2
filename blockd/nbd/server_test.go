package nbd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/internal/wire"
	client "github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

const mib = 1 << 20

// Every way in (GO or EXPORT_NAME, zeroes or not, structured or simple)
// reads back what it wrote, including the first and last byte.
func TestHandshakeVariants(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "disk", 8*mib, nbd.ExportInfo{MultiConn: true, BlockSize: 65536, Description: "test disk"})
	for _, o := range []client.Options{
		{Export: "disk"},
		{Export: "disk", Structured: true, MetaAlloc: true},
		{Export: "disk", ExportName: true},
		{Export: "disk", ExportName: true, NoZeroes: true},
		{Export: "disk", ExportName: true, Structured: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			c := ts.dial(t, o)
			if c.Size != 8*mib {
				t.Fatalf("size %d", c.Size)
			}
			want := wire.TFlagHasFlags | wire.TFlagSendFlush | wire.TFlagSendFUA | wire.TFlagSendTrim |
				wire.TFlagSendWriteZeroes | wire.TFlagSendFastZero | wire.TFlagCanMultiConn | wire.TFlagSendCache
			if o.Structured {
				want |= wire.TFlagSendDF
			}
			if c.Flags != want {
				t.Fatalf("flags %#x, want %#x", c.Flags, want)
			}
			if !o.ExportName && c.BlockSizes != [3]uint32{1, 65536, 32 * mib} {
				t.Fatalf("block sizes %v", c.BlockSizes)
			}
			p := pattern(4096, byte(len(t.Name())))
			for _, off := range []uint64{0, 8*mib - 4096} {
				if err := c.Write(off, p, wire.CmdFlagFUA); err != nil {
					t.Fatal(err)
				}
				got, err := c.Read(off, 4096)
				if err != nil || !bytes.Equal(got, p) {
					t.Fatalf("read at %d: %v, equal=%v", off, err, bytes.Equal(got, p))
				}
			}
			last, err := c.Read(8*mib-1, 1)
			if err != nil || last[0] != p[4095] {
				t.Fatalf("last byte %v %v", last, err)
			}
			if err := c.Cmd(wire.CmdFlush, 0, 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Disconnect(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// rawConn performs the greeting and returns a conn for option tests.
func rawConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	br := bufio.NewReader(nc)
	hf, err := client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
	if err != nil {
		t.Fatal(err)
	}
	if hf != wire.FlagFixedNewstyle|wire.FlagNoZeroes {
		t.Fatalf("handshake flags %#x", hf)
	}
	return nc, br
}

func finalType(t *testing.T, rs []client.OptionReply, err error) uint32 {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return rs[len(rs)-1].Type
}

func TestOptions(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "a", mib, nbd.ExportInfo{Description: "first"})
	ts.addMem(t, "b", 2*mib, nbd.ExportInfo{ReadOnly: true})
	nc, br := rawConn(t, ts.addr)

	// LIST: both exports with descriptions, then ACK.
	rs, err := client.Option(nc, br, wire.OptList, nil)
	if finalType(t, rs, err) != wire.RepAck || len(rs) != 3 {
		t.Fatalf("LIST replies %+v", rs)
	}
	if got := string(rs[0].Data[4:]); got != "afirst" || binary.BigEndian.Uint32(rs[0].Data) != 1 {
		t.Fatalf("LIST entry %q", rs[0].Data)
	}
	// LIST with data is invalid.
	rs, err = client.Option(nc, br, wire.OptList, []byte{1})
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("LIST with data: %+v", rs)
	}
	// INFO of an unknown export.
	rs, err = client.Option(nc, br, wire.OptInfo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "nope"}))
	if finalType(t, rs, err) != wire.RepErrUnknown {
		t.Fatalf("INFO unknown: %+v", rs)
	}
	// INFO with name and description requested.
	rs, err = client.Option(nc, br, wire.OptInfo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "a", Infos: []uint16{wire.InfoName, wire.InfoDescription}}))
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("INFO a: %+v", rs)
	}
	infos := map[uint16][]byte{}
	for _, r := range rs[:len(rs)-1] {
		infos[binary.BigEndian.Uint16(r.Data)] = r.Data[2:]
	}
	if string(infos[wire.InfoName]) != "a" || string(infos[wire.InfoDescription]) != "first" ||
		binary.BigEndian.Uint64(infos[wire.InfoExport]) != mib || len(infos[wire.InfoBlockSize]) != 12 {
		t.Fatalf("INFO a: %v", infos)
	}
	// Read-only export advertises READ_ONLY and no write features.
	rs, err = client.Option(nc, br, wire.OptInfo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "b"}))
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("INFO b: %+v", rs)
	}
	flags := binary.BigEndian.Uint16(rs[0].Data[10:])
	if flags&wire.TFlagReadOnly == 0 || flags&(wire.TFlagSendTrim|wire.TFlagSendWriteZeroes|wire.TFlagSendFUA) != 0 {
		t.Fatalf("read-only flags %#x", flags)
	}
	// Malformed INFO.
	rs, err = client.Option(nc, br, wire.OptInfo, []byte{0, 0, 0, 9, 'a'})
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("malformed INFO: %+v", rs)
	}
	// Meta contexts need structured replies first.
	mc := wire.AppendMetaContextRequest(nil, wire.MetaContextRequest{Export: "a"})
	rs, err = client.Option(nc, br, wire.OptListMetaContext, mc)
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("LIST_META_CONTEXT before STRUCTURED_REPLY: %+v", rs)
	}
	rs, err = client.Option(nc, br, wire.OptStructuredReply, []byte{0})
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("STRUCTURED_REPLY with data: %+v", rs)
	}
	rs, err = client.Option(nc, br, wire.OptStructuredReply, nil)
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("STRUCTURED_REPLY: %+v", rs)
	}
	for _, q := range [][]string{nil, {"base:"}, {"base:allocation"}, {"qemu:dirty-bitmap:x", "base:allocation"}} {
		rs, err = client.Option(nc, br, wire.OptListMetaContext, wire.AppendMetaContextRequest(nil, wire.MetaContextRequest{Export: "a", Queries: q}))
		if finalType(t, rs, err) != wire.RepAck || len(rs) != 2 || rs[0].Type != wire.RepMetaContext || string(rs[0].Data[4:]) != "base:allocation" {
			t.Fatalf("LIST_META_CONTEXT %q: %+v", q, rs)
		}
	}
	for _, q := range [][]string{{"base:"}, {"x-foo:bar"}, {}} {
		rs, err = client.Option(nc, br, wire.OptSetMetaContext, wire.AppendMetaContextRequest(nil, wire.MetaContextRequest{Export: "a", Queries: q}))
		if finalType(t, rs, err) != wire.RepAck || len(rs) != 1 {
			t.Fatalf("SET_META_CONTEXT %q selected something: %+v", q, rs)
		}
	}
	// STARTTLS without TLS configured; unknown and unsupported options.
	for _, opt := range []uint32{wire.OptStartTLS, wire.OptPeekExport, wire.OptExtendedHeaders, 12345} {
		rs, err = client.Option(nc, br, opt, nil)
		if finalType(t, rs, err) != wire.RepErrUnsup {
			t.Fatalf("%s: %+v", wire.OptionName(opt), rs)
		}
	}
	// An oversized option is skipped and refused, the session goes on.
	rs, err = client.Option(nc, br, 77, make([]byte, 100<<10))
	if finalType(t, rs, err) != wire.RepErrTooBig {
		t.Fatalf("big option: %+v", rs)
	}
	// ABORT is acknowledged, then the server closes.
	rs, err = client.Option(nc, br, wire.OptAbort, nil)
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("ABORT: %+v", rs)
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after ABORT read %d, %v; want EOF", n, err)
	}
}

// The metadata context must be selected for the export that is opened.
func TestMetaContextOtherExport(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "a", mib, nbd.ExportInfo{})
	ts.addMem(t, "b", mib, nbd.ExportInfo{})
	nc, br := rawConn(t, ts.addr)
	rs, err := client.Option(nc, br, wire.OptStructuredReply, nil)
	finalType(t, rs, err)
	rs, err = client.Option(nc, br, wire.OptSetMetaContext, wire.AppendMetaContextRequest(nil,
		wire.MetaContextRequest{Export: "a", Queries: []string{"base:allocation"}}))
	if finalType(t, rs, err) != wire.RepAck || len(rs) != 2 {
		t.Fatalf("SET: %+v", rs)
	}
	rs, err = client.Option(nc, br, wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "b"}))
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("GO: %+v", rs)
	}
	nc.Write(wire.AppendRequest(nil, wire.Request{Type: wire.CmdBlockStatus, Handle: 5, Length: 4096}))
	var h [wire.StructuredHeaderSize]byte
	io.ReadFull(br, h[:])
	sh, err := wire.DecodeStructuredHeader(h[:])
	if err != nil || sh.Type != wire.ReplyTypeError {
		t.Fatalf("block status on another export: %+v %v", sh, err)
	}
}

func TestExportsErrors(t *testing.T) {
	exp := &funcExports{
		list: func(context.Context) ([]nbd.ExportInfo, error) { return nil, errors.New("raft unavailable") },
		info: func(_ context.Context, name string) (nbd.ExportInfo, error) {
			return nbd.ExportInfo{Name: name, Size: mib}, nil
		},
		open: func(_ context.Context, name string) (nbd.Export, nbd.ExportInfo, func(), error) {
			return nil, nbd.ExportInfo{}, nil, fmt.Errorf("%w: vdisk %q is attached read-write on node n2", nbd.ErrAttached, name)
		},
	}
	ts := startServer(t, nbd.Config{Exports: exp})
	nc, br := rawConn(t, ts.addr)
	rs, err := client.Option(nc, br, wire.OptList, nil)
	if finalType(t, rs, err) != wire.RepErrPolicy {
		t.Fatalf("LIST: %+v", rs)
	}
	rs, err = client.Option(nc, br, wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "vm1"}))
	if finalType(t, rs, err) != wire.RepErrPolicy {
		t.Fatalf("GO attached: %+v", rs)
	}
	mustContain(t, string(rs[len(rs)-1].Data), "attached read-write on node n2")
	// EXPORT_NAME cannot report the error: the server closes.
	nc.Write(wire.AppendOption(nil, wire.OptExportName, []byte("vm1")))
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("EXPORT_NAME refused: %v, want EOF", err)
	}
}

func TestRequestErrors(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	const size = 64 * mib
	ts.addMem(t, "rw", size, nbd.ExportInfo{})
	ts.addMem(t, "ro", mib, nbd.ExportInfo{ReadOnly: true})
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprint("structured=", structured), func(t *testing.T) {
			c := ts.dial(t, client.Options{Export: "rw", Structured: structured})
			cases := []struct {
				name  string
				req   wire.Request
				data  []byte
				errno uint32
			}{
				{"read past end", wire.Request{Type: wire.CmdRead, Offset: size - 512, Length: 1024}, nil, wire.EINVAL},
				{"read offset past end", wire.Request{Type: wire.CmdRead, Offset: 1 << 62, Length: 1}, nil, wire.EINVAL},
				{"read offset overflow", wire.Request{Type: wire.CmdRead, Offset: ^uint64(0), Length: 2}, nil, wire.EINVAL},
				{"write past end", wire.Request{Type: wire.CmdWrite, Offset: size - 1, Length: 2}, []byte{1, 2}, wire.ENOSPC},
				{"zeroes past end", wire.Request{Type: wire.CmdWriteZeroes, Offset: size, Length: 1}, nil, wire.ENOSPC},
				{"trim past end", wire.Request{Type: wire.CmdTrim, Offset: size, Length: 1}, nil, wire.EINVAL},
				{"zero-length read", wire.Request{Type: wire.CmdRead, Offset: 0, Length: 0}, nil, wire.EINVAL},
				{"zero-length write", wire.Request{Type: wire.CmdWrite}, nil, wire.EINVAL},
				{"unknown command", wire.Request{Type: 99, Length: 1}, nil, wire.EINVAL},
				{"resize", wire.Request{Type: wire.CmdResize, Length: 1}, nil, wire.EINVAL},
				{"unknown flag", wire.Request{Type: wire.CmdRead, Flags: 1 << 9, Length: 1}, nil, wire.EINVAL},
				{"no_hole on read", wire.Request{Type: wire.CmdRead, Flags: wire.CmdFlagNoHole, Length: 1}, nil, wire.EINVAL},
				{"req_one on write", wire.Request{Type: wire.CmdWrite, Flags: wire.CmdFlagReqOne, Length: 1}, []byte{1}, wire.EINVAL},
				{"flush with length", wire.Request{Type: wire.CmdFlush, Length: 1}, nil, wire.EINVAL},
				{"block status without context", wire.Request{Type: wire.CmdBlockStatus, Length: 1}, nil, wire.EINVAL},
				{"oversized read", wire.Request{Type: wire.CmdRead, Length: 33 * mib}, nil, wire.EINVAL},
				{"oversized write (payload skipped)", wire.Request{Type: wire.CmdWrite, Length: 33 * mib}, make([]byte, 33*mib), wire.EINVAL},
			}
			if !structured {
				cases = append(cases, struct {
					name  string
					req   wire.Request
					data  []byte
					errno uint32
				}{"DF without structured", wire.Request{Type: wire.CmdRead, Flags: wire.CmdFlagDF, Length: 1}, nil, wire.EINVAL})
			}
			for _, tc := range cases {
				rep, err := c.Do(tc.req, tc.data)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if got := client.Errno(rep.Err); got != tc.errno {
					t.Errorf("%s: error %s, want %s", tc.name, wire.ErrnoName(got), wire.ErrnoName(tc.errno))
				}
				if structured && rep.Simple {
					t.Errorf("%s: simple error reply with structured replies", tc.name)
				}
				if structured && rep.Err != nil && rep.Err.(*client.Error).Msg == "" {
					t.Errorf("%s: structured error without message", tc.name)
				}
			}
			// The connection still works after all that.
			if err := c.Write(0, []byte("ok"), 0); err != nil {
				t.Fatal(err)
			}
		})
	}
	ro := ts.dial(t, client.Options{Export: "ro", Structured: true})
	for _, req := range []wire.Request{
		{Type: wire.CmdWrite, Length: 1},
		{Type: wire.CmdTrim, Length: 1},
		{Type: wire.CmdWriteZeroes, Length: 1},
	} {
		var data []byte
		if req.Type == wire.CmdWrite {
			data = []byte{1}
		}
		rep, err := ro.Do(req, data)
		if err != nil || client.Errno(rep.Err) != wire.EPERM {
			t.Errorf("%s on read-only: %v %v", wire.CommandName(req.Type), rep.Err, err)
		}
	}
	// FUA is not advertised on a read-only export.
	rep, err := ro.Do(wire.Request{Type: wire.CmdRead, Flags: wire.CmdFlagFUA, Length: 1}, nil)
	if err != nil || client.Errno(rep.Err) != wire.EINVAL {
		t.Errorf("FUA read on read-only: %v %v", rep.Err, err)
	}
	if got := ts.metric(t, "zos_nbd_request_errors_total", "command", "write", "error", "ENOSPC"); got != 2 {
		t.Errorf("ENOSPC write errors metric = %v, want 2", got)
	}
}

// A write too large to skip closes that connection only.
func TestHugeWriteCloses(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "d", mib, nbd.ExportInfo{})
	other := ts.dial(t, client.Options{Export: "d"})
	c := ts.dial(t, client.Options{Export: "d"})
	c.Send(wire.Request{Type: wire.CmdWrite, Length: 0xffffffff}, nil)
	if _, err := c.Recv(); err == nil {
		t.Fatal("server answered a 4 GiB write instead of closing")
	}
	if err := other.Write(0, []byte{1}, 0); err != nil {
		t.Fatalf("other connection: %v", err)
	}
}

func TestStructuredReadHoles(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "d", 4*mib, nbd.ExportInfo{})
	c := ts.dial(t, client.Options{Export: "d", Structured: true, MetaAlloc: true})
	data := pattern(8192, 3)
	c.Write(100, data[:1000], 0)
	c.Write(mib, data, 0)
	c.Write(2*mib+4096, data, 0)
	want := make([]byte, 3*mib)
	copy(want[100:], data[:1000])
	copy(want[mib:], data)
	copy(want[2*mib+4096:], data)

	rep, err := c.Do(wire.Request{Type: wire.CmdRead, Offset: 0, Length: 3 * mib}, nil)
	if err != nil || rep.Err != nil {
		t.Fatal(err, rep.Err)
	}
	if !bytes.Equal(rep.Data, want) {
		t.Fatal("structured read with holes returned wrong data")
	}
	if rep.Holes < 3 {
		t.Fatalf("only %d hole chunks in %d chunks", rep.Holes, rep.Chunks)
	}
	// Unaligned read: head and tail are data.
	rep, err = c.Do(wire.Request{Type: wire.CmdRead, Offset: 77, Length: mib + 10}, nil)
	if err != nil || rep.Err != nil || !bytes.Equal(rep.Data, want[77:77+mib+10]) {
		t.Fatalf("unaligned read: %v %v", err, rep.Err)
	}
	// DF: exactly one content chunk.
	rep, err = c.Do(wire.Request{Type: wire.CmdRead, Flags: wire.CmdFlagDF, Offset: 0, Length: 3 * mib}, nil)
	if err != nil || rep.Err != nil || rep.Chunks != 1 || rep.Holes != 0 || !bytes.Equal(rep.Data, want) {
		t.Fatalf("DF read: %v %v chunks=%d holes=%d", err, rep.Err, rep.Chunks, rep.Holes)
	}
	// Alternating 4 KiB data and holes over 4 MiB: chunks stay bounded.
	if err := c.Cmd(wire.CmdWriteZeroes, 0, 0, 4*mib); err != nil {
		t.Fatal(err)
	}
	for off := uint64(0); off < 4*mib; off += 8192 {
		c.Write(off, data[:4096], 0)
	}
	rep, err = c.Do(wire.Request{Type: wire.CmdRead, Offset: 0, Length: 4 * mib}, nil)
	if err != nil || rep.Err != nil || rep.Chunks > 64 {
		t.Fatalf("fragmented read: %v %v chunks=%d", err, rep.Err, rep.Chunks)
	}
	for off := 0; off < 4*mib; off += 8192 {
		if !bytes.Equal(rep.Data[off:off+4096], data[:4096]) || !bytes.Equal(rep.Data[off+4096:off+8192], make([]byte, 4096)) {
			t.Fatalf("fragmented read wrong at %d", off)
		}
	}
}

func TestBlockStatus(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "d", 4*mib, nbd.ExportInfo{})
	c := ts.dial(t, client.Options{Export: "d", Structured: true, MetaAlloc: true})
	if !c.MetaOK {
		t.Fatal("base:allocation not selected")
	}
	c.Write(mib, pattern(64<<10, 1), 0)
	ext, err := c.BlockStatus(0, 4*mib, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Extent{{Length: mib, Flags: wire.StateHole | wire.StateZero}, {Length: 64 << 10}, {Length: 3*mib - 64<<10, Flags: wire.StateHole | wire.StateZero}}
	if fmt.Sprint(ext) != fmt.Sprint(want) {
		t.Fatalf("extents %v, want %v", ext, want)
	}
	ext, err = c.BlockStatus(mib-4096, 2*mib, wire.CmdFlagReqOne)
	if err != nil || len(ext) != 1 || ext[0] != (wire.Extent{Length: 4096, Flags: wire.StateHole | wire.StateZero}) {
		t.Fatalf("REQ_ONE: %v %v", ext, err)
	}
	// Zeroing with NO_HOLE leaves allocated zeroes; trimming makes a hole.
	if err := c.Cmd(wire.CmdWriteZeroes, wire.CmdFlagNoHole, mib, 32<<10); err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd(wire.CmdTrim, 0, mib+32<<10, 32<<10); err != nil {
		t.Fatal(err)
	}
	ext, _ = c.BlockStatus(mib, 64<<10, 0)
	want = []wire.Extent{{Length: 32 << 10, Flags: wire.StateZero}, {Length: 32 << 10, Flags: wire.StateHole | wire.StateZero}}
	if fmt.Sprint(ext) != fmt.Sprint(want) {
		t.Fatalf("after zero/trim: %v, want %v", ext, want)
	}
	if err := c.Cmd(wire.CmdWriteZeroes, wire.CmdFlagFastZero|wire.CmdFlagFUA, 0, 4*mib); err != nil {
		t.Fatalf("fast zero on memory: %v", err)
	}
	if err := c.Cmd(wire.CmdCache, 0, 0, mib); err != nil {
		t.Fatalf("cache: %v", err)
	}
}

// Export errors map to the NBD errors; a panic is EIO and the server lives.
func TestExportFaults(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	mem := ts.addMem(t, "base", mib, nbd.ExportInfo{})
	h := &hookExport{Export: mem}
	h.write = func(ctx context.Context, p []byte, off int64, fua bool) error {
		switch off {
		case 0:
			return fmt.Errorf("pool full: %w", nbd.ErrNoSpace)
		case 512:
			panic("boom")
		case 1024:
			return nbd.ErrReadOnly
		case 1536:
			return errors.New("disk on fire")
		}
		return mem.WriteAt(ctx, p, off, fua)
	}
	h.zero = func(ctx context.Context, off, n int64, f nbd.ZeroFlags) error {
		if f&nbd.ZeroFast != 0 {
			return nbd.ErrNotFast
		}
		return mem.WriteZeroes(ctx, off, n, f)
	}
	h.read = func(ctx context.Context, p []byte, off int64) error {
		if off == 4096 {
			panic(fmt.Sprintf("read panic at %d", off))
		}
		return mem.ReadAt(ctx, p, off)
	}
	h.status = func(ctx context.Context, off, n int64) ([]nbd.Extent, error) { return nil, nil }
	ts.exports.Add(h, nbd.ExportInfo{Name: "faulty"})
	for _, structured := range []bool{false, true} {
		c := ts.dial(t, client.Options{Export: "faulty", Structured: structured, MetaAlloc: structured})
		for off, want := range map[uint64]uint32{0: wire.ENOSPC, 512: wire.EIO, 1024: wire.EPERM, 1536: wire.EIO, 2048: 0} {
			err := c.Write(off, []byte("x"), 0)
			if client.Errno(err) != want {
				t.Errorf("write at %d: %v, want %s", off, err, wire.ErrnoName(want))
			}
		}
		if err := c.Cmd(wire.CmdWriteZeroes, wire.CmdFlagFastZero, 0, 4096); client.Errno(err) != wire.ENOTSUP {
			t.Errorf("fast zero: %v, want ENOTSUP", err)
		}
		if _, err := c.Read(4096, 4096); client.Errno(err) != wire.EIO {
			t.Errorf("panicking read: %v, want EIO", err)
		}
		if structured {
			if _, err := c.BlockStatus(0, 4096, 0); client.Errno(err) != wire.EIO {
				t.Errorf("empty block status: %v, want EIO", err)
			}
		}
		if got, err := c.Read(2048, 1); err != nil || got[0] != 'x' {
			t.Errorf("read after faults: %v %v", got, err)
		}
		c.Disconnect()
	}
	if got := ts.metric(t, "zos_nbd_export_panics_total"); got != 4 {
		t.Errorf("panics metric %v, want 4", got)
	}
	mustContain(t, ts.logs.String(), "boom")
}

// Requests of one connection are served concurrently: an export that only
// answers once 16 reads are in progress together must not deadlock.
func TestConcurrentRequests(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	mem := ts.addMem(t, "m", 16*mib, nbd.ExportInfo{})
	const n = 16
	var wg sync.WaitGroup
	wg.Add(n)
	var peak, cur atomic.Int32
	h := &hookExport{Export: mem}
	h.read = func(ctx context.Context, p []byte, off int64) error {
		v := cur.Add(1)
		for {
			old := peak.Load()
			if v <= old || peak.CompareAndSwap(old, v) {
				break
			}
		}
		if off < n*4096 {
			wg.Done()
			wg.Wait() // all n first reads in progress at once
		}
		cur.Add(-1)
		return mem.ReadAt(ctx, p, off)
	}
	ts.exports.Add(h, nbd.ExportInfo{Name: "barrier"})
	c := ts.dial(t, client.Options{Export: "barrier", Structured: true})
	for i := 0; i < n; i++ {
		if _, err := c.Send(wire.Request{Type: wire.CmdRead, Offset: uint64(i) * 4096, Length: 4096}, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Raw().SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := 0; i < n; i++ {
		rep, err := c.Recv()
		if err != nil || rep.Err != nil {
			t.Fatalf("reply %d: %v %v", i, err, rep)
		}
	}
	if peak.Load() < n {
		t.Fatalf("peak concurrency %d, want %d", peak.Load(), n)
	}
	// Pipelined mixed traffic: many writes then reads, all answered right.
	const k = 200
	for i := 0; i < k; i++ {
		c.Send(wire.Request{Type: wire.CmdWrite, Offset: uint64(n*4096 + i*4096), Length: 4096}, pattern(4096, byte(i)))
	}
	for i := 0; i < k; i++ {
		if rep, err := c.Recv(); err != nil || rep.Err != nil {
			t.Fatalf("write reply: %v %v", err, rep)
		}
	}
	handles := map[uint64]int{}
	for i := 0; i < k; i++ {
		h, _ := c.Send(wire.Request{Type: wire.CmdRead, Offset: uint64(n*4096 + i*4096), Length: 4096}, nil)
		handles[h] = i
	}
	for i := 0; i < k; i++ {
		rep, err := c.Recv()
		if err != nil || rep.Err != nil {
			t.Fatalf("read reply: %v %v", err, rep)
		}
		if !bytes.Equal(rep.Data, pattern(4096, byte(handles[rep.Handle]))) {
			t.Fatalf("read %d returned wrong data", handles[rep.Handle])
		}
	}
}

// Shutdown answers the requests in flight, flushes, releases, and returns.
func TestShutdownGraceful(t *testing.T) {
	mem := mustMem(mib)
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	h := &hookExport{Export: mem}
	h.write = func(ctx context.Context, p []byte, off int64, fua bool) error {
		entered <- struct{}{}
		<-release
		return mem.WriteAt(ctx, p, off, fua)
	}
	var released atomic.Int32
	exp := &funcExports{
		list: func(context.Context) ([]nbd.ExportInfo, error) { return nil, nil },
		info: func(context.Context, string) (nbd.ExportInfo, error) { return nbd.ExportInfo{}, nil },
		open: func(context.Context, string) (nbd.Export, nbd.ExportInfo, func(), error) {
			return h, nbd.ExportInfo{}, func() { released.Add(1) }, nil
		},
	}
	ts := startServer(t, nbd.Config{Exports: exp})
	c := ts.dial(t, client.Options{Export: "x"})
	for i := 0; i < 3; i++ {
		c.Send(wire.Request{Type: wire.CmdWrite, Offset: uint64(i) * 512, Length: 512}, pattern(512, 9))
	}
	for i := 0; i < 3; i++ {
		<-entered
	}
	idle := ts.dial(t, client.Options{Export: "x"}) // in transmission, nothing in flight
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- ts.srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v with requests in flight", err)
	default:
	}
	close(release)
	c.Raw().SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < 3; i++ {
		rep, err := c.Recv()
		if err != nil || rep.Err != nil {
			t.Fatalf("in-flight write %d: %v %v", i, err, rep)
		}
	}
	if err := <-shutdownDone; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(); err == nil {
		t.Fatal("connection still open after Shutdown")
	}
	idle.Raw().SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := idle.Recv(); err == nil {
		t.Fatal("idle connection still open after Shutdown")
	}
	if released.Load() != 2 || h.flushes.Load() != 2 {
		t.Fatalf("released %d, flushed %d; want 2 and 2", released.Load(), h.flushes.Load())
	}
	if _, err := client.Dial(ts.addr, client.Options{Export: "x"}); err == nil {
		t.Fatal("new connection accepted after Shutdown")
	}
}

// Close cancels Export calls in progress and does not wait for clients.
func TestCloseCancels(t *testing.T) {
	mem := mustMem(mib)
	h := &hookExport{Export: mem}
	entered := make(chan struct{})
	h.flush = func(ctx context.Context) error {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	}
	ts := startServer(t, nbd.Config{})
	ts.exports.Add(h, nbd.ExportInfo{Name: "x"})
	c := ts.dial(t, client.Options{Export: "x"})
	c.Send(wire.Request{Type: wire.CmdFlush}, nil)
	<-entered
	done := make(chan struct{})
	go func() { ts.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
}

// Serve's context cancellation is a graceful shutdown and Serve returns nil.
func TestServeContext(t *testing.T) {
	base := numGoroutines()
	exports := nbd.NewStaticExports()
	exports.Add(mustMem(mib), nbd.ExportInfo{Name: "d"})
	srv, err := nbd.New(nbd.Config{Exports: exports})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c, err := client.Dial(ln.Addr().String(), client.Options{Export: "d"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Write(0, []byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	c.Close()
	checkGoroutines(t, base)
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "d", mib, nbd.ExportInfo{})
	c := ts.dial(t, client.Options{Export: "d", Structured: true})
	for i := 0; i < 10; i++ {
		c.Write(uint64(i)*512, pattern(512, 1), 0)
		c.Read(uint64(i)*512, 512)
	}
	c.Cmd(wire.CmdFlush, 0, 0, 0)
	c.Read(mib, 1) // EINVAL
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"zos_nbd_requests_total", []string{"command", "read"}, 11},
		{"zos_nbd_requests_total", []string{"command", "write"}, 10},
		{"zos_nbd_requests_total", []string{"command", "flush"}, 1},
		{"zos_nbd_request_duration_seconds", []string{"command", "write"}, 10},
		{"zos_nbd_request_errors_total", []string{"command", "read", "error", "EINVAL"}, 1},
		{"zos_nbd_read_bytes_total", nil, 5120},
		{"zos_nbd_written_bytes_total", nil, 5120},
		{"zos_nbd_requests_in_flight", nil, 0},
		{"zos_nbd_connections", nil, 1},
		{"zos_nbd_handshakes_total", []string{"result", "ok"}, 1},
	}
	// A request's metrics are recorded as its reply goes out, so the
	// client may see the last reply a moment before they are: wait.
	for _, ck := range checks {
		wait.For(t, 30*time.Second, fmt.Sprintf("%s%v = %v", ck.name, ck.labels, ck.want), func() bool {
			return ts.metric(t, ck.name, ck.labels...) == ck.want
		})
	}
	c.Disconnect()
	wait.For(t, 30*time.Second, "connection gauge to drop", func() bool { return ts.metric(t, "zos_nbd_connections") == 0 })
}

// Fast commands are served inline by the reader; a command that turns slow
// moves to the workers after one call and runs concurrently again.
func TestInlineAdapts(t *testing.T) {
	ts := startServer(t, nbd.Config{})
	mem := mustMem(16 * mib)
	var slow atomic.Bool
	var cur, peak atomic.Int32
	h := &hookExport{Export: mem}
	h.read = func(ctx context.Context, p []byte, off int64) error {
		if slow.Load() {
			v := cur.Add(1)
			for old := peak.Load(); v > old && !peak.CompareAndSwap(old, v); old = peak.Load() {
			}
			time.Sleep(100 * time.Millisecond)
			cur.Add(-1)
		}
		return mem.ReadAt(ctx, p, off)
	}
	ts.exports.Add(h, nbd.ExportInfo{Name: "x"})
	c := ts.dial(t, client.Options{Export: "x"})
	for i := 0; i < 200; i++ { // train: reads are fast
		if _, err := c.Read(uint64(i)*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	slow.Store(true)
	const n = 8
	for i := 0; i < n; i++ {
		c.Send(wire.Request{Type: wire.CmdRead, Offset: uint64(i) * 4096, Length: 4096}, nil)
	}
	c.Raw().SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := 0; i < n; i++ {
		if rep, err := c.Recv(); err != nil || rep.Err != nil {
			t.Fatalf("reply %d: %v %v", i, err, rep)
		}
	}
	if peak.Load() < 2 {
		t.Fatalf("slow reads never ran concurrently (peak %d): still served inline", peak.Load())
	}
}
