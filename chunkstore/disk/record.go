package disk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/zosproject/zos/chunkstore"
)

// On-disk formats. All integers are little endian.
//
// A segment file starts with a 16-byte header:
//
//	0  "ZOSSEG\x00\x01"  magic and format version
//	8  id     u32        segment number (also in the file name)
//	12 crc    u32        CRC-32C of bytes 0..12
//
// followed by records, each a 64-byte header and the shard's data:
//
//	0  magic   u32  recordMagic
//	4  hdrcrc  u32  CRC-32C of header bytes 8..64
//	8  key     35   chunkstore.ShardKey (ref, k, m, index)
//	43 flags   u8   0
//	44 chunk   u32  whole chunk length
//	48 size    u32  data length
//	52 sum     u32  CRC-32C of data (chunkstore.ShardSum)
//	56 written i64  Unix nanoseconds
//	64 data    size bytes
//
// The header CRC protects the header (including the data checksum); the data
// checksum protects the data, so a read makes one pass over the data.
//
// The pebble index maps 's' + key (36 bytes) to a 32-byte location:
//
//	0  seg     u32
//	4  off     u64  offset of the record header
//	12 size    u32
//	16 chunk   u32
//	20 sum     u32
//	24 written i64
//
// and 'm' + name to small metadata values (see Store.SetMeta).

const (
	segMagic     = "ZOSSEG\x00\x01"
	segHeaderLen = 16
	recordMagic  = 0x3152535a // "ZSR1"
	recHeaderLen = 64
	locLen       = 32
	indexPrefix  = 's'
	metaPrefix   = 'm'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func segmentHeader(id uint32) []byte {
	b := make([]byte, segHeaderLen)
	copy(b, segMagic)
	binary.LittleEndian.PutUint32(b[8:], id)
	binary.LittleEndian.PutUint32(b[12:], crc(b[:12]))
	return b
}

func checkSegmentHeader(b []byte, id uint32) error {
	if len(b) < segHeaderLen || string(b[:8]) != segMagic {
		return fmt.Errorf("%w: segment %d: bad magic", chunkstore.ErrCorrupt, id)
	}
	if crc(b[:12]) != binary.LittleEndian.Uint32(b[12:]) {
		return fmt.Errorf("%w: segment %d: header checksum", chunkstore.ErrCorrupt, id)
	}
	if got := binary.LittleEndian.Uint32(b[8:]); got != id {
		return fmt.Errorf("%w: segment file %d says it is segment %d", chunkstore.ErrCorrupt, id, got)
	}
	return nil
}

// loc is an index entry: where a shard's record is and its header.
type loc struct {
	seg     uint32
	off     int64
	size    uint32
	chunk   uint32
	sum     uint32
	written int64
}

func (l loc) recordLen() int64 { return recHeaderLen + int64(l.size) }

func (l loc) encode() []byte {
	b := make([]byte, locLen)
	binary.LittleEndian.PutUint32(b[0:], l.seg)
	binary.LittleEndian.PutUint64(b[4:], uint64(l.off))
	binary.LittleEndian.PutUint32(b[12:], l.size)
	binary.LittleEndian.PutUint32(b[16:], l.chunk)
	binary.LittleEndian.PutUint32(b[20:], l.sum)
	binary.LittleEndian.PutUint64(b[24:], uint64(l.written))
	return b
}

func decodeLoc(b []byte) (loc, error) {
	if len(b) != locLen {
		return loc{}, fmt.Errorf("%w: index entry is %d bytes, want %d", chunkstore.ErrCorrupt, len(b), locLen)
	}
	return loc{
		seg:     binary.LittleEndian.Uint32(b[0:]),
		off:     int64(binary.LittleEndian.Uint64(b[4:])),
		size:    binary.LittleEndian.Uint32(b[12:]),
		chunk:   binary.LittleEndian.Uint32(b[16:]),
		sum:     binary.LittleEndian.Uint32(b[20:]),
		written: int64(binary.LittleEndian.Uint64(b[24:])),
	}, nil
}

func (l loc) info(k chunkstore.ShardKey) chunkstore.ShardInfo {
	return chunkstore.ShardInfo{Key: k, Size: l.size, ChunkSize: l.chunk, Sum: l.sum, Written: l.written}
}

func indexKey(k chunkstore.ShardKey) []byte {
	b := make([]byte, 0, 1+chunkstore.ShardKeySize)
	b = append(b, indexPrefix)
	return k.AppendBinary(b)
}

func keyFromIndex(b []byte) (chunkstore.ShardKey, error) {
	if len(b) != 1+chunkstore.ShardKeySize || b[0] != indexPrefix {
		return chunkstore.ShardKey{}, fmt.Errorf("%w: bad index key %x", chunkstore.ErrCorrupt, b)
	}
	return chunkstore.DecodeShardKey(b[1:])
}

// recordHeader encodes the 64-byte header of a record holding si.
func recordHeader(dst []byte, si chunkstore.ShardInfo) {
	_ = dst[recHeaderLen-1]
	binary.LittleEndian.PutUint32(dst[0:], recordMagic)
	si.Key.AppendBinary(dst[8:8])
	dst[43] = 0
	binary.LittleEndian.PutUint32(dst[44:], si.ChunkSize)
	binary.LittleEndian.PutUint32(dst[48:], si.Size)
	binary.LittleEndian.PutUint32(dst[52:], si.Sum)
	binary.LittleEndian.PutUint64(dst[56:], uint64(si.Written))
	binary.LittleEndian.PutUint32(dst[4:], crc(dst[8:recHeaderLen]))
}

// parseRecordHeader decodes and checks a record header.
func parseRecordHeader(b []byte) (chunkstore.ShardInfo, error) {
	var si chunkstore.ShardInfo
	if len(b) < recHeaderLen {
		return si, fmt.Errorf("%w: short record header", chunkstore.ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(b[0:]) != recordMagic {
		return si, fmt.Errorf("%w: bad record magic", chunkstore.ErrCorrupt)
	}
	if crc(b[8:recHeaderLen]) != binary.LittleEndian.Uint32(b[4:]) {
		return si, fmt.Errorf("%w: record header checksum mismatch", chunkstore.ErrCorrupt)
	}
	k, err := chunkstore.DecodeShardKey(b[8:43])
	if err != nil {
		return si, err
	}
	si = chunkstore.ShardInfo{
		Key:       k,
		ChunkSize: binary.LittleEndian.Uint32(b[44:]),
		Size:      binary.LittleEndian.Uint32(b[48:]),
		Sum:       binary.LittleEndian.Uint32(b[52:]),
		Written:   int64(binary.LittleEndian.Uint64(b[56:])),
	}
	if si.Size > chunkstore.MaxChunkSize {
		return si, fmt.Errorf("%w: record claims %d bytes", chunkstore.ErrCorrupt, si.Size)
	}
	return si, nil
}
