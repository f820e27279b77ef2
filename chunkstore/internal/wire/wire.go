// Package wire is the shard protocol between a shard client
// (chunkstore/remote) and a shard server (chunkstore/shard): the
// authentication handshake, the framing, and the payload codecs. Every
// decoder treats its input as hostile: lengths and counts are checked
// against the bytes present before anything is allocated, and an error (never
// a panic) reports malformed input. The decoders are fuzzed.
//
// # Handshake
//
//	client -> server  "ZOSSHRD1" | client nonce (32)
//	server -> client  "ZOSSHRD1" | server nonce (32) | HMAC-SHA256(secret, "zos shard server" | cn | sn)
//	client -> server  HMAC-SHA256(secret, "zos shard client" | sn | cn)
//	server -> client  0x00 (accepted) or 0x01 (refused, then close)
//
// Both sides prove knowledge of the cluster secret without sending it; fresh
// nonces defeat replay. The protocol does not encrypt: run it on the
// cluster's private network.
//
// # Frames
//
//	len  u32  bytes after this field (type, id, payload), at most MaxFrame
//	type u8
//	id   u32  request id chosen by the client, echoed by the server
//	payload
//
// A client may have many requests in flight on one connection; responses
// come in any order, matched by id. A Get is answered by one GetItem frame
// per key (streamed as the server reads them), a GetRng by one RngItem
// frame per range; every other request by one frame; any request may
// instead be answered by an Error frame.
//
// # Ranged reads
//
// GetRng asks for parts of shards:
//
//	count u32 | count × (key 35 | off u32 | len u32)
//
// and each RngItem answers one range:
//
//	index u32 | status u8 | (message: len u16 | bytes) or (info | off u32 | len u32 | len bytes)
//
// where info is the whole shard's header. The bytes are a part of the
// shard, so its checksum cannot cover them: the reader verifies what it
// assembles (chunkstore.FetchRanges).
//
// # Journal requests
//
// JAppend, JRead and JTrim carry the journal.Log calls to a node's
// journal (chunkstore/journal). JAppend and JTrim are answered by OK,
// JRead by JRecords. Records travel as
//
//	count u32 | count × (epoch u64 | seq u64 | len u32 | payload)
//
// with the payloads as their own parts of the frame (not copied).
package wire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/bufpool"
	"github.com/zosproject/zos/chunkstore/journal"
)

// Magic opens the handshake in both directions.
const Magic = "ZOSSHRD1"

// MaxFrame is the largest frame (after the length field).
const MaxFrame = 64<<20 + 1<<20

// eagerAlloc: frames up to this size get their buffer at once; larger ones
// grow as their bytes arrive, so a length field alone cannot make a peer
// allocate MaxFrame.
const eagerAlloc = 8 << 20

// MaxItems caps the keys or shards in one request.
const MaxItems = 1 << 16

// Frame types.
const (
	TypePut     = 1
	TypeGet     = 2
	TypeStat    = 3
	TypeDelete  = 4
	TypeEnum    = 5
	TypePing    = 6
	TypeStats   = 7
	TypeJAppend = 8
	TypeJRead   = 9
	TypeJTrim   = 10
	TypeGetRng  = 11   // parts of shards (chunkstore.ShardRangeGetter)
	TypeOK      = 0x81 // answer to Put, Ping, JAppend, JTrim
	TypeGetItem = 0x82
	TypeStatRes = 0x83
	TypeDelRes  = 0x84
	TypeEnumRes = 0x85
	TypeStatsRs = 0x87
	TypeJRecs   = 0x89 // answer to JRead
	TypeRngItem = 0x8b // one per range of a GetRng
	TypeError   = 0xff
)

// IsRequest reports whether t is a request type.
func IsRequest(t byte) bool { return t >= TypePut && t <= TypeGetRng }

// IsRequestSpace reports whether t is in the range of request types
// (below the answers' 0x80), known or not: a server answers an unknown
// one with an Error frame (a newer client's request) and closes the
// connection on anything else that is not a request.
func IsRequestSpace(t byte) bool { return t >= TypePut && t < 0x80 }

// ErrProtocol: the peer sent something that is not this protocol.
var ErrProtocol = errors.New("shard protocol error")

// ErrAuth: the handshake failed; the two sides do not share the secret.
var ErrAuth = errors.New("shard protocol: authentication failed (cluster secret mismatch)")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

const frameHeader = 9 // len + type + id

// Frame is one decoded frame. Payload aliases the reader's buffer only
// until the next ReadFrame with the same buffer.
type Frame struct {
	Type    byte
	ID      uint32
	Payload []byte
}

// ReadFrame reads one frame. buf is reused when large enough.
func ReadFrame(r io.Reader, buf []byte) (Frame, []byte, error) {
	return readFrame(r, buf, nil)
}

// ReadFramePooled reads one frame into a buffer from chunkstore's buffer
// pool when it is small enough to be allocated at once; release returns
// it (call it once nothing refers to the payload any more).
func ReadFramePooled(r io.Reader) (Frame, func(), error) {
	var pooled []byte
	f, _, err := readFrame(r, nil, func(n int) []byte {
		pooled = bufpool.Get(n)
		return pooled
	})
	release := func() {
		if pooled != nil {
			bufpool.Put(pooled)
			pooled = nil
		}
	}
	if err != nil {
		release()
	}
	return f, release, err
}

func readFrame(r io.Reader, buf []byte, alloc func(int) []byte) (Frame, []byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, buf, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:])
	if n < 5 || n > MaxFrame {
		return Frame{}, buf, protoErr("frame length %d", n)
	}
	f := Frame{Type: hdr[4], ID: binary.LittleEndian.Uint32(hdr[5:])}
	size := int(n) - 5
	if cap(buf) < size && size <= eagerAlloc {
		if alloc != nil && size > 0 {
			buf = alloc(size)
		} else {
			buf = make([]byte, size)
		}
	}
	if cap(buf) >= size {
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return Frame{}, buf, unexpected(err)
		}
		f.Payload = buf
		return f, buf, nil
	}
	// Grow with the bytes that actually arrive.
	buf = buf[:0]
	for len(buf) < size {
		step := min(size-len(buf), max(64<<10, len(buf)))
		buf = append(buf, make([]byte, step)...)
		if _, err := io.ReadFull(r, buf[len(buf)-step:]); err != nil {
			return Frame{}, buf, unexpected(err)
		}
	}
	f.Payload = buf
	return f, buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteFrameTo writes a frame whose payload is the concatenation of parts
// with one vectored write (writev on a TCP connection): the parts are not
// copied. Callers serialise writes on w.
func WriteFrameTo(w io.Writer, typ byte, id uint32, parts ...[]byte) error {
	size := 5
	for _, p := range parts {
		size += len(p)
	}
	if size > MaxFrame {
		return fmt.Errorf("%w: frame of %d bytes exceeds the %d limit", chunkstore.ErrTooLarge, size, MaxFrame)
	}
	var hdr [frameHeader]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(size))
	hdr[4] = typ
	binary.LittleEndian.PutUint32(hdr[5:], id)
	bufs := make(net.Buffers, 0, 1+len(parts))
	bufs = append(bufs, hdr[:])
	for _, p := range parts {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	_, err := bufs.WriteTo(w)
	return err
}

// ---- handshake

func mac(secret []byte, label string, a, b []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write(a)
	h.Write(b)
	return h.Sum(nil)
}

// ClientHandshake runs the client side of the handshake on rw.
func ClientHandshake(rw io.ReadWriter, secret []byte) error {
	cn := make([]byte, 32)
	if _, err := rand.Read(cn); err != nil {
		return err
	}
	if _, err := rw.Write(append([]byte(Magic), cn...)); err != nil {
		return err
	}
	resp := make([]byte, len(Magic)+64)
	if _, err := io.ReadFull(rw, resp); err != nil {
		return fmt.Errorf("reading server hello: %w", err)
	}
	if string(resp[:len(Magic)]) != Magic {
		return protoErr("server hello has magic %q, want %q", resp[:len(Magic)], Magic)
	}
	sn := resp[len(Magic) : len(Magic)+32]
	if !hmac.Equal(resp[len(Magic)+32:], mac(secret, "zos shard server", cn, sn)) {
		return fmt.Errorf("%w: the server's proof is wrong", ErrAuth)
	}
	if _, err := rw.Write(mac(secret, "zos shard client", sn, cn)); err != nil {
		return err
	}
	var ok [1]byte
	if _, err := io.ReadFull(rw, ok[:]); err != nil {
		return fmt.Errorf("reading handshake result: %w", err)
	}
	if ok[0] != 0 {
		return fmt.Errorf("%w: the server refused our proof", ErrAuth)
	}
	return nil
}

// ServerHandshake runs the server side of the handshake on rw.
func ServerHandshake(rw io.ReadWriter, secret []byte) error {
	hello := make([]byte, len(Magic)+32)
	if _, err := io.ReadFull(rw, hello); err != nil {
		return fmt.Errorf("reading client hello: %w", err)
	}
	if string(hello[:len(Magic)]) != Magic {
		return protoErr("client hello has magic %q, want %q", hello[:len(Magic)], Magic)
	}
	cn := hello[len(Magic):]
	sn := make([]byte, 32)
	if _, err := rand.Read(sn); err != nil {
		return err
	}
	out := append([]byte(Magic), sn...)
	out = append(out, mac(secret, "zos shard server", cn, sn)...)
	if _, err := rw.Write(out); err != nil {
		return err
	}
	proof := make([]byte, 32)
	if _, err := io.ReadFull(rw, proof); err != nil {
		return fmt.Errorf("reading client proof: %w", err)
	}
	if !hmac.Equal(proof, mac(secret, "zos shard client", sn, cn)) {
		_, _ = rw.Write([]byte{1})
		return ErrAuth
	}
	_, err := rw.Write([]byte{0})
	return err
}

// ---- payload codecs

// InfoSize is the encoded size of a ShardInfo.
const InfoSize = chunkstore.ShardKeySize + 4 + 4 + 4 + 8

// AppendInfo appends the encoding of si.
func AppendInfo(b []byte, si chunkstore.ShardInfo) []byte {
	b = si.Key.AppendBinary(b)
	b = binary.LittleEndian.AppendUint32(b, si.Size)
	b = binary.LittleEndian.AppendUint32(b, si.ChunkSize)
	b = binary.LittleEndian.AppendUint32(b, si.Sum)
	return binary.LittleEndian.AppendUint64(b, uint64(si.Written))
}

// decoder reads a payload front to back, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = protoErr(format, args...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("payload truncated: need %d bytes, have %d", n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() byte {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(p)
}

func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

func (d *decoder) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

// count reads an item count and checks that at least min bytes per item
// remain.
func (d *decoder) count(minEach int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if n > MaxItems {
		d.fail("%d items exceeds the %d limit", n, MaxItems)
		return 0
	}
	if minEach > 0 && int(n) > len(d.b)/minEach {
		d.fail("%d items cannot fit in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) key() chunkstore.ShardKey {
	p := d.take(chunkstore.ShardKeySize)
	if p == nil {
		return chunkstore.ShardKey{}
	}
	k, err := chunkstore.DecodeShardKey(p)
	if err != nil {
		d.fail("%v", err)
	}
	return k
}

func (d *decoder) info() chunkstore.ShardInfo {
	var si chunkstore.ShardInfo
	si.Key = d.key()
	si.Size = d.u32()
	si.ChunkSize = d.u32()
	si.Sum = d.u32()
	si.Written = int64(d.u64())
	return si
}

func (d *decoder) str() string {
	n := d.u16()
	return string(d.take(int(n)))
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// PutParts returns the payload of a Put request as parts (headers and the
// shards' data, not copied).
func PutParts(shards []chunkstore.Shard) [][]byte {
	parts := make([][]byte, 0, 1+2*len(shards))
	meta := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+InfoSize*len(shards)), uint32(len(shards)))
	parts = append(parts, nil) // placeholder for the count
	start := 4
	for _, sh := range shards {
		meta = AppendInfo(meta, sh.ShardInfo)
		parts = append(parts, meta[start:len(meta):len(meta)], sh.Data)
		start = len(meta)
	}
	parts[0] = meta[:4]
	return parts
}

// DecodePut decodes a Put request. The shards' Data alias p. Sizes are
// checked against the bytes present; checksums are not (the store does).
func DecodePut(p []byte) ([]chunkstore.Shard, error) {
	d := &decoder{b: p}
	n := d.count(InfoSize)
	out := make([]chunkstore.Shard, 0, n)
	for range n {
		si := d.info()
		if d.err == nil && si.Size > chunkstore.MaxChunkSize {
			d.fail("shard of %d bytes", si.Size)
		}
		data := d.take(int(si.Size))
		if d.err != nil {
			break
		}
		out = append(out, chunkstore.Shard{ShardInfo: si, Data: data[:len(data):len(data)]})
	}
	return out, d.end()
}

// AppendKeys encodes a list of keys (Get and Stat requests).
func AppendKeys(b []byte, keys []chunkstore.ShardKey) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = k.AppendBinary(b)
	}
	return b
}

// DecodeKeys decodes AppendKeys.
func DecodeKeys(p []byte) ([]chunkstore.ShardKey, error) {
	d := &decoder{b: p}
	n := d.count(chunkstore.ShardKeySize)
	out := make([]chunkstore.ShardKey, 0, n)
	for range n {
		out = append(out, d.key())
	}
	return out, d.end()
}

// AppendDelete encodes a Delete request.
func AppendDelete(b []byte, keys []chunkstore.ShardKey, before int64) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(before))
	return AppendKeys(b, keys)
}

// DecodeDelete decodes AppendDelete.
func DecodeDelete(p []byte) ([]chunkstore.ShardKey, int64, error) {
	if len(p) < 8 {
		return nil, 0, protoErr("delete request of %d bytes", len(p))
	}
	keys, err := DecodeKeys(p[8:])
	return keys, int64(binary.LittleEndian.Uint64(p)), err
}

// AppendEnum encodes an Enum request.
func AppendEnum(b []byte, after chunkstore.ShardKey, limit int) []byte {
	b = after.AppendBinary(b)
	return binary.LittleEndian.AppendUint32(b, uint32(limit))
}

// DecodeEnum decodes AppendEnum.
func DecodeEnum(p []byte) (chunkstore.ShardKey, int, error) {
	d := &decoder{b: p}
	k := d.key()
	n := d.u32()
	if d.err == nil && n > MaxItems {
		d.fail("enumerate limit %d exceeds %d", n, MaxItems)
	}
	return k, int(n), d.end()
}

// AppendInfos encodes an Enum response.
func AppendInfos(b []byte, infos []chunkstore.ShardInfo) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(infos)))
	for _, si := range infos {
		b = AppendInfo(b, si)
	}
	return b
}

// DecodeInfos decodes AppendInfos.
func DecodeInfos(p []byte) ([]chunkstore.ShardInfo, error) {
	d := &decoder{b: p}
	n := d.count(InfoSize)
	out := make([]chunkstore.ShardInfo, 0, n)
	for range n {
		out = append(out, d.info())
	}
	return out, d.end()
}

// Status of one item of a Get or Stat response, and the code of an Error
// frame.
const (
	StatusOK         = 0
	StatusNotFound   = 1
	StatusCorrupt    = 2
	StatusError      = 3 // server-side failure (I/O, closed store)
	StatusBadRequest = 4 // the request was invalid
	StatusTooLarge   = 5
	StatusFenced     = 6  // journal.ErrFenced
	StatusInvalid    = 7  // journal.ErrInvalid
	StatusFull       = 8  // journal.ErrFull
	StatusSyncFailed = 9  // journal.ErrSyncFailed (an older client reads StatusError)
	StatusBadRange   = 10 // chunkstore.ErrBadRange
)

// StatusOf classifies err for the wire.
func StatusOf(err error) byte {
	switch {
	case err == nil:
		return StatusOK
	case errors.Is(err, chunkstore.ErrNotFound):
		return StatusNotFound
	case errors.Is(err, chunkstore.ErrCorrupt):
		return StatusCorrupt
	case errors.Is(err, chunkstore.ErrTooLarge):
		return StatusTooLarge
	case errors.Is(err, journal.ErrFenced):
		return StatusFenced
	case errors.Is(err, journal.ErrInvalid):
		return StatusInvalid
	case errors.Is(err, journal.ErrFull):
		return StatusFull
	case errors.Is(err, journal.ErrSyncFailed):
		return StatusSyncFailed
	case errors.Is(err, chunkstore.ErrBadRange):
		return StatusBadRange
	case errors.Is(err, chunkstore.ErrBadRef), errors.Is(err, chunkstore.ErrBadProfile), errors.Is(err, ErrProtocol):
		return StatusBadRequest
	}
	return StatusError
}

// ErrRemote is wrapped by errors the server reported that have no
// chunkstore sentinel (its disk failed, the request was refused).
var ErrRemote = errors.New("shard server error")

// ErrorOf turns a status and message back into an error wrapping the
// matching sentinel.
func ErrorOf(status byte, msg string) error {
	switch status {
	case StatusOK:
		return nil
	case StatusNotFound:
		return fmt.Errorf("%w (remote: %s)", chunkstore.ErrNotFound, msg)
	case StatusCorrupt:
		return fmt.Errorf("%w (remote: %s)", chunkstore.ErrCorrupt, msg)
	case StatusTooLarge:
		return fmt.Errorf("%w (remote: %s)", chunkstore.ErrTooLarge, msg)
	case StatusBadRequest:
		return fmt.Errorf("%w: request refused: %s", ErrRemote, msg)
	case StatusFenced:
		return remoteSentinel(journal.ErrFenced, msg)
	case StatusInvalid:
		return remoteSentinel(journal.ErrInvalid, msg)
	case StatusFull:
		return remoteSentinel(journal.ErrFull, msg)
	case StatusSyncFailed:
		return remoteSentinel(journal.ErrSyncFailed, msg)
	case StatusBadRange:
		return remoteSentinel(chunkstore.ErrBadRange, msg)
	}
	return fmt.Errorf("%w: %s", ErrRemote, msg)
}

// remoteSentinel wraps sentinel with the server's message, without
// repeating the sentinel's own text when the message starts with it.
func remoteSentinel(sentinel error, msg string) error {
	if rest, ok := strings.CutPrefix(msg, sentinel.Error()+": "); ok {
		msg = rest
	}
	return fmt.Errorf("%w (remote: %s)", sentinel, msg)
}

func appendStr(b []byte, s string) []byte {
	if len(s) > math.MaxUint16 {
		s = s[:math.MaxUint16]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// AppendError encodes an Error frame payload.
func AppendError(b []byte, err error) []byte {
	b = append(b, StatusOf(err))
	return appendStr(b, err.Error())
}

// DecodeError decodes an Error frame into an error.
func DecodeError(p []byte) error {
	d := &decoder{b: p}
	st := d.u8()
	msg := d.str()
	if err := d.end(); err != nil {
		return err
	}
	if st == StatusOK {
		st = StatusError
	}
	return ErrorOf(st, msg)
}

// GetItemHeader encodes the head of a GetItem frame: item index, status and
// either the shard info (the data follows as its own part) or a message.
func GetItemHeader(b []byte, index int, sh chunkstore.Shard, err error) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(index))
	st := StatusOf(err)
	b = append(b, st)
	if st != StatusOK {
		return appendStr(b, err.Error())
	}
	return AppendInfo(b, sh.ShardInfo)
}

// DecodeGetItem decodes a GetItem frame. The shard's Data aliases p.
func DecodeGetItem(p []byte) (index int, res chunkstore.ShardResult, err error) {
	d := &decoder{b: p}
	index = int(d.u32())
	st := d.u8()
	if d.err == nil && st != StatusOK {
		msg := d.str()
		if err := d.end(); err != nil {
			return 0, res, err
		}
		return index, chunkstore.ShardResult{Err: ErrorOf(st, msg)}, nil
	}
	si := d.info()
	data := d.take(int(si.Size))
	if err := d.end(); err != nil {
		return 0, res, err
	}
	return index, chunkstore.ShardResult{Shard: chunkstore.Shard{ShardInfo: si, Data: data[:len(data):len(data)]}}, nil
}

// rangeSize is the encoded size of a chunkstore.ShardRange.
const rangeSize = chunkstore.ShardKeySize + 4 + 4

// AppendRanges encodes a GetRng request.
func AppendRanges(b []byte, rs []chunkstore.ShardRange) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rs)))
	for _, r := range rs {
		b = r.Key.AppendBinary(b)
		b = binary.LittleEndian.AppendUint32(b, r.Off)
		b = binary.LittleEndian.AppendUint32(b, r.Len)
	}
	return b
}

// DecodeRanges decodes AppendRanges. Ranges are decoded as sent, not
// checked (the store answers a bad one with an error for it).
func DecodeRanges(p []byte) ([]chunkstore.ShardRange, error) {
	d := &decoder{b: p}
	n := d.count(rangeSize)
	out := make([]chunkstore.ShardRange, 0, n)
	for range n {
		k := d.key()
		off, n := d.u32(), d.u32()
		out = append(out, chunkstore.ShardRange{Key: k, Off: off, Len: n})
	}
	return out, d.end()
}

// RangeItemHeader encodes the head of a RngItem frame: item index, status
// and either the shard's header, off and the data's length (the data
// follows as its own part) or a message.
func RangeItemHeader(b []byte, index int, sh chunkstore.Shard, off uint32, err error) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(index))
	st := StatusOf(err)
	b = append(b, st)
	if st != StatusOK {
		return appendStr(b, err.Error())
	}
	b = AppendInfo(b, sh.ShardInfo)
	b = binary.LittleEndian.AppendUint32(b, off)
	return binary.LittleEndian.AppendUint32(b, uint32(len(sh.Data)))
}

// DecodeRangeItem decodes a RngItem frame. The data aliases p; off is
// where in the shard it starts.
func DecodeRangeItem(p []byte) (index int, res chunkstore.ShardResult, off uint32, err error) {
	d := &decoder{b: p}
	index = int(d.u32())
	st := d.u8()
	if d.err == nil && st != StatusOK {
		msg := d.str()
		if err := d.end(); err != nil {
			return 0, res, 0, err
		}
		return index, chunkstore.ShardResult{Err: ErrorOf(st, msg)}, 0, nil
	}
	si := d.info()
	off = d.u32()
	n := d.u32()
	if d.err == nil && (n > si.Size || off > si.Size-n) {
		d.fail("range [%d, +%d) of a %d-byte shard", off, n, si.Size)
	}
	data := d.take(int(n))
	if err := d.end(); err != nil {
		return 0, res, 0, err
	}
	return index, chunkstore.ShardResult{Shard: chunkstore.Shard{ShardInfo: si, Data: data[:len(data):len(data)]}}, off, nil
}

// AppendStatResults encodes a Stat response.
func AppendStatResults(b []byte, res []chunkstore.ShardResult) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(res)))
	for _, r := range res {
		st := StatusOf(r.Err)
		b = append(b, st)
		if st != StatusOK {
			b = appendStr(b, r.Err.Error())
			continue
		}
		b = AppendInfo(b, r.Shard.ShardInfo)
	}
	return b
}

// DecodeStatResults decodes AppendStatResults.
func DecodeStatResults(p []byte) ([]chunkstore.ShardResult, error) {
	d := &decoder{b: p}
	n := d.count(3)
	out := make([]chunkstore.ShardResult, 0, n)
	for range n {
		st := d.u8()
		if d.err != nil {
			break
		}
		if st != StatusOK {
			out = append(out, chunkstore.ShardResult{Err: ErrorOf(st, d.str())})
			continue
		}
		out = append(out, chunkstore.ShardResult{Shard: chunkstore.Shard{ShardInfo: d.info()}})
	}
	return out, d.end()
}

// AppendU32 encodes a Delete response (the count).
func AppendU32(b []byte, n int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(n)) }

// DecodeU32 decodes AppendU32.
func DecodeU32(p []byte) (int, error) {
	d := &decoder{b: p}
	n := d.u32()
	return int(n), d.end()
}

// AppendStats encodes a Stats response.
func AppendStats(b []byte, s chunkstore.ShardStoreStats) []byte {
	for _, v := range []int64{s.Shards, s.Bytes, s.DiskBytes, s.DeadBytes, s.Corrupt, int64(s.Segments), s.Compacted, s.WriteBytes, s.ReadBytes} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// DecodeStats decodes AppendStats.
func DecodeStats(p []byte) (chunkstore.ShardStoreStats, error) {
	d := &decoder{b: p}
	var v [9]int64
	for i := range v {
		v[i] = int64(d.u64())
	}
	s := chunkstore.ShardStoreStats{Shards: v[0], Bytes: v[1], DiskBytes: v[2], DeadBytes: v[3], Corrupt: v[4],
		Segments: int(v[5]), Compacted: v[6], WriteBytes: v[7], ReadBytes: v[8]}
	return s, d.end()
}

// ---- journal

// jRecHead is the encoded size of a record without its payload.
const jRecHead = 8 + 8 + 4

// appendRecHead encodes a record's head (its payload follows).
func appendRecHead(b []byte, r journal.Record) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Epoch)
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	return binary.LittleEndian.AppendUint32(b, uint32(len(r.Payload)))
}

// recordParts appends to parts the encoding of recs after head (a prefix
// the caller built): the payloads are parts of their own, not copied.
func recordParts(head []byte, recs []journal.Record) [][]byte {
	meta := binary.LittleEndian.AppendUint32(head, uint32(len(recs)))
	meta = slices.Grow(meta, jRecHead*len(recs))
	parts := make([][]byte, 0, 1+2*len(recs))
	start := 0
	for _, r := range recs {
		meta = appendRecHead(meta, r)
		if len(r.Payload) > 0 {
			parts = append(parts, meta[start:len(meta):len(meta)], r.Payload)
			start = len(meta)
		}
	}
	if start < len(meta) {
		parts = append(parts, meta[start:len(meta):len(meta)])
	}
	return parts
}

// records decodes a list of records; payloads alias the decoder's bytes.
// maxCount bounds the count.
func (d *decoder) records(maxCount int) []journal.Record {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if int64(n) > int64(maxCount) {
		d.fail("%d records exceeds the %d limit", n, maxCount)
		return nil
	}
	if int(n) > len(d.b)/jRecHead {
		d.fail("%d records cannot fit in %d bytes", n, len(d.b))
		return nil
	}
	out := make([]journal.Record, 0, n)
	for range n {
		epoch, seq, l := d.u64(), d.u64(), d.u32()
		p := d.take(int(l))
		if d.err != nil {
			return nil
		}
		out = append(out, journal.Record{Epoch: epoch, Seq: seq, Payload: p[:len(p):len(p)]})
	}
	return out
}

// JAppendParts returns the payload of a JAppend request as parts (the
// records' payloads are not copied):
//
//	name (u16 len | bytes) | epoch u64 | records
func JAppendParts(name string, epoch uint64, recs []journal.Record) [][]byte {
	head := appendStr(make([]byte, 0, 2+len(name)+8+4+jRecHead*len(recs)), name)
	head = binary.LittleEndian.AppendUint64(head, epoch)
	return recordParts(head, recs)
}

// DecodeJAppend decodes a JAppend request. The payloads alias p. Only the
// encoding is checked: the journal checks the values.
func DecodeJAppend(p []byte) (name string, epoch uint64, recs []journal.Record, err error) {
	d := &decoder{b: p}
	name = d.str()
	epoch = d.u64()
	recs = d.records(journal.MaxRecords)
	if err := d.end(); err != nil {
		return "", 0, nil, err
	}
	return name, epoch, recs, nil
}

// AppendJRead encodes a JRead request: name | seal u64.
func AppendJRead(b []byte, name string, seal uint64) []byte {
	b = appendStr(b, name)
	return binary.LittleEndian.AppendUint64(b, seal)
}

// DecodeJRead decodes AppendJRead.
func DecodeJRead(p []byte) (name string, seal uint64, err error) {
	d := &decoder{b: p}
	name = d.str()
	seal = d.u64()
	if err := d.end(); err != nil {
		return "", 0, err
	}
	return name, seal, nil
}

// AppendJTrim encodes a JTrim request: name | epoch u64 | seq u64.
func AppendJTrim(b []byte, name string, epoch, seq uint64) []byte {
	b = appendStr(b, name)
	b = binary.LittleEndian.AppendUint64(b, epoch)
	return binary.LittleEndian.AppendUint64(b, seq)
}

// DecodeJTrim decodes AppendJTrim.
func DecodeJTrim(p []byte) (name string, epoch, seq uint64, err error) {
	d := &decoder{b: p}
	name = d.str()
	epoch, seq = d.u64(), d.u64()
	if err := d.end(); err != nil {
		return "", 0, 0, err
	}
	return name, epoch, seq, nil
}

// JRecordsParts returns the payload of a JRecords answer as parts (the
// payloads are not copied).
func JRecordsParts(recs []journal.Record) [][]byte {
	return recordParts(make([]byte, 0, 4+jRecHead*len(recs)), recs)
}

// DecodeJRecords decodes a JRecords answer. The payloads alias p; the
// count is bounded by the bytes present (a journal read may return more
// than MaxItems records).
func DecodeJRecords(p []byte) ([]journal.Record, error) {
	d := &decoder{b: p}
	recs := d.records(math.MaxInt32)
	if err := d.end(); err != nil {
		return nil, err
	}
	return recs, nil
}
