package wire

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
)

// FuzzDecode feeds arbitrary payloads to every decoder: no panics, and what
// decodes re-encodes to the same bytes where the encoding is canonical.
func FuzzDecode(f *testing.F) {
	shards := sampleShards()
	f.Add(byte(TypePut), bytes.Join(PutParts(shards), nil))
	f.Add(byte(TypeGet), AppendKeys(nil, nil))
	f.Add(byte(TypeDelete), AppendDelete(nil, nil, 5))
	f.Add(byte(TypeEnum), AppendEnum(nil, shards[0].Key, 10))
	f.Add(byte(TypeEnumRes), AppendInfos(nil, nil))
	f.Add(byte(TypeGetItem), append(GetItemHeader(nil, 1, shards[0], nil), shards[0].Data...))
	f.Add(byte(TypeStatRes), []byte{1, 0, 0, 0, 1, 2, 0, 'h', 'i'})
	f.Add(byte(TypeError), []byte{3, 2, 0, 'n', 'o'})
	f.Add(byte(TypeStatsRs), make([]byte, 72))
	recs := sampleRecords()
	f.Add(byte(10), bytes.Join(JAppendParts("vdisk-1", 3, recs), nil))
	f.Add(byte(11), AppendJRead(nil, "vdisk-1", 4))
	f.Add(byte(12), AppendJTrim(nil, "vdisk-1", 3, 9))
	f.Add(byte(13), bytes.Join(JRecordsParts(recs), nil))
	f.Add(byte(13), bytes.Join(JRecordsParts(nil), nil))
	f.Add(byte(TypeError), AppendError(nil, fmt.Errorf("%w: sealed at 5", journal.ErrFenced)))
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		switch typ % 14 {
		case 0:
			if s, err := DecodePut(p); err == nil {
				if got := bytes.Join(PutParts(s), nil); !bytes.Equal(got, p) {
					t.Fatalf("put re-encodes differently")
				}
			}
		case 1:
			if k, err := DecodeKeys(p); err == nil && !bytes.Equal(AppendKeys(nil, k), p) {
				t.Fatalf("keys re-encode differently")
			}
		case 2:
			DecodeDelete(p)
		case 3:
			DecodeEnum(p)
		case 4:
			if in, err := DecodeInfos(p); err == nil && !bytes.Equal(AppendInfos(nil, in), p) {
				t.Fatalf("infos re-encode differently")
			}
		case 5:
			DecodeGetItem(p)
		case 6:
			DecodeStatResults(p)
		case 7:
			_ = DecodeError(p)
		case 8:
			DecodeStats(p)
		case 9:
			DecodeU32(p)
		case 10:
			if name, epoch, recs, err := DecodeJAppend(p); err == nil {
				if got := bytes.Join(JAppendParts(name, epoch, recs), nil); !bytes.Equal(got, p) {
					t.Fatalf("jappend re-encodes differently")
				}
			}
		case 11:
			if name, seal, err := DecodeJRead(p); err == nil && !bytes.Equal(AppendJRead(nil, name, seal), p) {
				t.Fatalf("jread re-encodes differently")
			}
		case 12:
			if name, epoch, seq, err := DecodeJTrim(p); err == nil && !bytes.Equal(AppendJTrim(nil, name, epoch, seq), p) {
				t.Fatalf("jtrim re-encodes differently")
			}
		case 13:
			if recs, err := DecodeJRecords(p); err == nil {
				if got := bytes.Join(JRecordsParts(recs), nil); !bytes.Equal(got, p) {
					t.Fatalf("jrecords re-encode differently")
				}
			}
		}
	})
}

// FuzzReadFrame reads frames from an arbitrary stream until an error.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	WriteFrameTo(&buf, TypePing, 1)
	WriteFrameTo(&buf, TypeGet, 2, AppendKeys(nil, nil))
	f.Add(buf.Bytes())
	f.Add([]byte{5, 0, 0, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var b []byte
		for range 100 {
			fr, nb, err := ReadFrame(r, b)
			b = nb
			if err != nil {
				return
			}
			if len(fr.Payload) > MaxFrame {
				t.Fatal("payload over the limit")
			}
		}
	})
}

// FuzzRanges feeds arbitrary payloads to the ranged-read decoders: no
// panics, what decodes re-encodes to the same bytes, and an item's data
// lies within the shard its header describes.
func FuzzRanges(f *testing.F) {
	sh := sampleShards()[1]
	rs := []chunkstore.ShardRange{{Key: sh.Key, Off: 1, Len: 3}, {Key: sh.Key, Off: 0, Len: 0}}
	f.Add(false, AppendRanges(nil, rs))
	f.Add(false, AppendRanges(nil, nil))
	part := sh
	part.Data = sh.Data[1:4]
	f.Add(true, append(RangeItemHeader(nil, 2, part, 1, nil), part.Data...))
	f.Add(true, RangeItemHeader(nil, 0, chunkstore.Shard{}, 0, fmt.Errorf("%w: past the end", chunkstore.ErrBadRange)))
	f.Fuzz(func(t *testing.T, item bool, p []byte) {
		if !item {
			if rs, err := DecodeRanges(p); err == nil && !bytes.Equal(AppendRanges(nil, rs), p) {
				t.Fatalf("ranges re-encode differently")
			}
			return
		}
		idx, res, off, err := DecodeRangeItem(p)
		if err != nil {
			return
		}
		if res.Err != nil {
			if res.Shard.Data != nil {
				t.Fatal("an error item with data")
			}
			return
		}
		if uint64(off)+uint64(len(res.Shard.Data)) > uint64(res.Shard.Size) {
			t.Fatalf("range [%d, +%d) past a %d-byte shard", off, len(res.Shard.Data), res.Shard.Size)
		}
		if got := append(RangeItemHeader(nil, idx, res.Shard, off, nil), res.Shard.Data...); !bytes.Equal(got, p) {
			t.Fatalf("range item re-encodes differently")
		}
	})
}
