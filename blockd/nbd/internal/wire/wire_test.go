package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// The values the specification (doc/proto.md) gives; guards against a typo
// in a constant or a wrong value in go-nbd's protocol package.
func TestConstantsMatchSpec(t *testing.T) {
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"NBDMAGIC", MagicNBD, 0x4e42444d41474943},
		{"IHAVEOPT", MagicOption, 0x49484156454F5054},
		{"option reply magic", MagicOptionReply, 0x3e889045565a9},
		{"request magic", uint64(MagicRequest), 0x25609513},
		{"simple reply magic", uint64(MagicSimpleReply), 0x67446698},
		{"structured reply magic", uint64(MagicStructuredReply), 0x668e33ef},
		{"NBD_OPT_ABORT", uint64(OptAbort), 2},
		{"NBD_OPT_LIST", uint64(OptList), 3},
		{"NBD_OPT_INFO", uint64(OptInfo), 6},
		{"NBD_OPT_GO", uint64(OptGo), 7},
		{"NBD_OPT_LIST_META_CONTEXT", uint64(OptListMetaContext), 9},
		{"NBD_OPT_SET_META_CONTEXT", uint64(OptSetMetaContext), 10},
		{"NBD_REP_ERR_UNSUP", uint64(RepErrUnsup), 1<<31 + 1},
		{"NBD_REP_ERR_UNKNOWN", uint64(RepErrUnknown), 1<<31 + 6},
		{"NBD_REP_ERR_TLS_REQD", uint64(RepErrTLSReqd), 1<<31 + 5},
		{"NBD_FLAG_CAN_MULTI_CONN", uint64(TFlagCanMultiConn), 1 << 8},
		{"NBD_FLAG_SEND_FAST_ZERO", uint64(TFlagSendFastZero), 1 << 11},
		{"NBD_CMD_BLOCK_STATUS", uint64(CmdBlockStatus), 7},
		{"NBD_REPLY_TYPE_ERROR", uint64(ReplyTypeError), 32769},
		{"NBD_REPLY_TYPE_ERROR_OFFSET", uint64(ReplyTypeErrorOffset), 32770},
		{"NBD_EPERM", uint64(EPERM), 1},
		{"NBD_EINVAL", uint64(EINVAL), 22},
		{"NBD_ESHUTDOWN", uint64(ESHUTDOWN), 108},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, spec says %#x", c.name, c.got, c.want)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Flags: CmdFlagFUA, Type: CmdWrite, Handle: 0xdeadbeefcafe, Offset: 1 << 40, Length: 4096}
	b := AppendRequest(nil, r)
	if len(b) != RequestSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), RequestSize)
	}
	got, magic, err := DecodeRequest(b)
	if err != nil || magic != MagicRequest || got != r {
		t.Fatalf("DecodeRequest = %+v, %#x, %v; want %+v", got, magic, err, r)
	}
	b[0] ^= 0xff
	if _, _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad magic: err = %v, want ErrMalformed", err)
	}
	if _, _, err := DecodeRequest(b[:27]); !errors.Is(err, ErrShort) {
		t.Fatalf("short: err = %v, want ErrShort", err)
	}
}

func TestInfoRequest(t *testing.T) {
	r := InfoRequest{Name: "disk-1", Infos: []uint16{InfoName, InfoBlockSize}}
	b := AppendInfoRequest(nil, r)
	got, err := ParseInfoRequest(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("ParseInfoRequest = %+v, %v", got, err)
	}
	// Empty name, no infos.
	got, err = ParseInfoRequest(AppendInfoRequest(nil, InfoRequest{}))
	if err != nil || got.Name != "" || len(got.Infos) != 0 {
		t.Fatalf("empty: %+v, %v", got, err)
	}
	// Trailing byte, name longer than data, count mismatch.
	for i, bad := range [][]byte{
		append(append([]byte{}, b...), 0),
		{0, 0, 0, 9, 'a', 0, 0},
		{0, 0, 0, 0, 0, 2, 0, 1},
		{0, 0, 0},
	} {
		if _, err := ParseInfoRequest(bad); err == nil {
			t.Errorf("case %d: accepted %x", i, bad)
		}
	}
}

func TestMetaContextRequest(t *testing.T) {
	r := MetaContextRequest{Export: "x", Queries: []string{"base:", "qemu:dirty-bitmap:a"}}
	got, err := ParseMetaContextRequest(AppendMetaContextRequest(nil, r))
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("ParseMetaContextRequest = %+v, %v", got, err)
	}
	// A count that cannot fit must not allocate.
	huge := binary.BigEndian.AppendUint32(nil, 0)
	huge = binary.BigEndian.AppendUint32(huge, 0xffffffff)
	if _, err := ParseMetaContextRequest(huge); err == nil {
		t.Fatal("accepted 4G queries in 0 bytes")
	}
}

func TestChunks(t *testing.T) {
	b := AppendErrorChunk(nil, 7, EIO, "boom")
	h, err := DecodeStructuredHeader(b)
	if err != nil || h.Type != ReplyTypeError || h.Flags != ReplyFlagDone || h.Handle != 7 || int(h.Length) != len(b)-StructuredHeaderSize {
		t.Fatalf("header %+v, %v", h, err)
	}
	errno, msg, err := ParseErrorChunk(b[StructuredHeaderSize:])
	if err != nil || errno != EIO || msg != "boom" {
		t.Fatalf("ParseErrorChunk = %d %q %v", errno, msg, err)
	}
	ext := []Extent{{4096, StateHole | StateZero}, {512, 0}}
	b = AppendBlockStatusChunk(nil, ReplyFlagDone, 9, 1, ext)
	id, got, err := ParseBlockStatus(b[StructuredHeaderSize:])
	if err != nil || id != 1 || !reflect.DeepEqual(got, ext) {
		t.Fatalf("ParseBlockStatus = %d %v %v", id, got, err)
	}
	long := AppendErrorChunk(nil, 1, EIO, string(bytes.Repeat([]byte("x"), 5000)))
	if len(long) != StructuredHeaderSize+6+MaxString {
		t.Fatalf("error message not clipped: %d bytes", len(long))
	}
}
