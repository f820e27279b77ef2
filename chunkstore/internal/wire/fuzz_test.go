package wire

import (
	"bytes"
	"testing"
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
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		switch typ % 10 {
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
