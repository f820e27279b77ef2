package wire

import (
	"bytes"
	"testing"
)

// FuzzDecodeRequest: any 28+ bytes decode without panic; a decoded request
// re-encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Type: CmdRead, Handle: 1, Offset: 0, Length: 512}))
	f.Add(AppendRequest(nil, Request{Flags: CmdFlagFUA | CmdFlagNoHole | CmdFlagFastZero, Type: CmdWriteZeroes, Handle: ^uint64(0), Offset: ^uint64(0), Length: ^uint32(0)}))
	f.Add(AppendRequest(nil, Request{Type: CmdDisc}))
	f.Add([]byte("garbage garbage garbage garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, magic, err := DecodeRequest(b)
		if err != nil {
			if len(b) >= RequestSize && magic == MagicRequest {
				t.Fatalf("good magic but error %v", err)
			}
			return
		}
		if got := AppendRequest(nil, r); !bytes.Equal(got, b[:RequestSize]) {
			t.Fatalf("re-encode %x != %x", got, b[:RequestSize])
		}
	})
}

// FuzzParseInfoRequest: never panics; accepted input re-encodes identically.
func FuzzParseInfoRequest(f *testing.F) {
	f.Add(AppendInfoRequest(nil, InfoRequest{Name: "vdisk", Infos: []uint16{0, 1, 2, 3}}))
	f.Add(AppendInfoRequest(nil, InfoRequest{}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseInfoRequest(b)
		if err != nil {
			return
		}
		if got := AppendInfoRequest(nil, r); !bytes.Equal(got, b) {
			t.Fatalf("re-encode %x != %x", got, b)
		}
	})
}

// FuzzParseMetaContextRequest: never panics, never allocates beyond the
// input; accepted input re-encodes identically.
func FuzzParseMetaContextRequest(f *testing.F) {
	f.Add(AppendMetaContextRequest(nil, MetaContextRequest{Export: "a", Queries: []string{"base:allocation"}}))
	f.Add(AppendMetaContextRequest(nil, MetaContextRequest{}))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseMetaContextRequest(b)
		if err != nil {
			return
		}
		if got := AppendMetaContextRequest(nil, r); !bytes.Equal(got, b) {
			t.Fatalf("re-encode %x != %x", got, b)
		}
	})
}

// FuzzReplies: the client-side decoders never panic.
func FuzzReplies(f *testing.F) {
	f.Add(AppendErrorChunk(nil, 1, EIO, "x"))
	f.Add(AppendBlockStatusChunk(nil, ReplyFlagDone, 1, 1, []Extent{{1, 2}}))
	f.Add(AppendOptionReplyHeader(nil, OptGo, RepAck, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeStructuredHeader(b)
		_, _ = DecodeOptionReplyHeader(b)
		_, _ = DecodeOptionHeader(b)
		if len(b) > StructuredHeaderSize {
			_, _, _ = ParseBlockStatus(b[StructuredHeaderSize:])
			_, _, _ = ParseErrorChunk(b[StructuredHeaderSize:])
		}
	})
}
