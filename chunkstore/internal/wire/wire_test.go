package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
)

func sampleShards() []chunkstore.Shard {
	p := chunkstore.Profile{K: 2, M: 1}
	ref := chunkstore.Sum([]byte("chunk"))
	var out []chunkstore.Shard
	for i := range 3 {
		sh := chunkstore.NewShard(chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(i)}, 10, []byte{byte(i), 2, 3, 4, 5})
		sh.Written = int64(1000 + i)
		out = append(out, sh)
	}
	return out
}

func TestRoundTrips(t *testing.T) {
	shards := sampleShards()
	var buf bytes.Buffer
	if err := WriteFrameTo(&buf, TypePut, 7, PutParts(shards)...); err != nil {
		t.Fatal(err)
	}
	f, _, err := ReadFrame(&buf, nil)
	if err != nil || f.Type != TypePut || f.ID != 7 {
		t.Fatalf("frame %+v %v", f, err)
	}
	got, err := DecodePut(f.Payload)
	if err != nil || len(got) != 3 {
		t.Fatalf("DecodePut: %v %d", err, len(got))
	}
	for i := range got {
		if got[i].ShardInfo != shards[i].ShardInfo || !bytes.Equal(got[i].Data, shards[i].Data) {
			t.Fatalf("put shard %d: %+v", i, got[i])
		}
	}
	keys := []chunkstore.ShardKey{shards[0].Key, {Ref: shards[1].Key.Ref, Index: chunkstore.AnyIndex}}
	k2, err := DecodeKeys(AppendKeys(nil, keys))
	if err != nil || len(k2) != 2 || k2[0] != keys[0] || k2[1] != keys[1] {
		t.Fatalf("keys: %v %v", k2, err)
	}
	k3, before, err := DecodeDelete(AppendDelete(nil, keys, 42))
	if err != nil || before != 42 || len(k3) != 2 {
		t.Fatalf("delete: %v %d %v", k3, before, err)
	}
	after, limit, err := DecodeEnum(AppendEnum(nil, keys[0], 500))
	if err != nil || after != keys[0] || limit != 500 {
		t.Fatalf("enum: %v %d %v", after, limit, err)
	}
	infos := []chunkstore.ShardInfo{shards[0].ShardInfo, shards[2].ShardInfo}
	i2, err := DecodeInfos(AppendInfos(nil, infos))
	if err != nil || len(i2) != 2 || i2[1] != infos[1] {
		t.Fatalf("infos: %v %v", i2, err)
	}
	res := []chunkstore.ShardResult{{Shard: shards[0]}, {Err: chunkstore.ErrNotFound}, {Err: errors.New("disk on fire")}}
	r2, err := DecodeStatResults(AppendStatResults(nil, res))
	if err != nil || len(r2) != 3 || r2[0].Shard.ShardInfo != shards[0].ShardInfo ||
		!errors.Is(r2[1].Err, chunkstore.ErrNotFound) || !errors.Is(r2[2].Err, ErrRemote) {
		t.Fatalf("stat results: %+v %v", r2, err)
	}
	head := GetItemHeader(nil, 5, shards[1], nil)
	idx, gr, err := DecodeGetItem(append(head, shards[1].Data...))
	if err != nil || idx != 5 || gr.Err != nil || !bytes.Equal(gr.Shard.Data, shards[1].Data) {
		t.Fatalf("get item: %d %+v %v", idx, gr, err)
	}
	idx, gr, err = DecodeGetItem(GetItemHeader(nil, 9, chunkstore.Shard{}, chunkstore.ErrCorrupt))
	if err != nil || idx != 9 || !chunkstore.IsCorruption(gr.Err) {
		t.Fatalf("get item error: %d %+v %v", idx, gr, err)
	}
	if err := DecodeError(AppendError(nil, chunkstore.ErrTooLarge)); !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("error frame: %v", err)
	}
	st := chunkstore.ShardStoreStats{Shards: 1, Bytes: 2, DiskBytes: 3, DeadBytes: 4, Corrupt: 5, Segments: 6, Compacted: 7, WriteBytes: 8, ReadBytes: 9}
	if s2, err := DecodeStats(AppendStats(nil, st)); err != nil || s2 != st {
		t.Fatalf("stats %+v %v", s2, err)
	}
}

func sampleRecords() []journal.Record {
	return []journal.Record{
		{Epoch: 3, Seq: 1, Payload: []byte("first write")},
		{Epoch: 3, Seq: 2}, // empty payload
		{Epoch: 3, Seq: 7, Payload: bytes.Repeat([]byte{0xab}, 5000)},
	}
}

func sameRecords(a, b []journal.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Epoch != b[i].Epoch || a[i].Seq != b[i].Seq || !bytes.Equal(a[i].Payload, b[i].Payload) {
			return false
		}
	}
	return true
}

func TestJournalRoundTrips(t *testing.T) {
	recs := sampleRecords()
	parts := JAppendParts("vdisk-1", 3, recs)
	// The payloads travel as their own parts, not copied.
	found := false
	for _, p := range parts {
		if len(p) > 0 && &p[0] == &recs[2].Payload[0] {
			found = true
		}
	}
	if !found {
		t.Fatal("JAppendParts copied a payload")
	}
	var buf bytes.Buffer
	if err := WriteFrameTo(&buf, TypeJAppend, 9, parts...); err != nil {
		t.Fatal(err)
	}
	f, _, err := ReadFrame(&buf, nil)
	if err != nil || f.Type != TypeJAppend || f.ID != 9 || !IsRequest(f.Type) {
		t.Fatalf("frame %+v %v", f, err)
	}
	name, epoch, got, err := DecodeJAppend(f.Payload)
	if err != nil || name != "vdisk-1" || epoch != 3 || !sameRecords(got, recs) {
		t.Fatalf("jappend: %q %d %v %v", name, epoch, got, err)
	}
	if name, seal, err := DecodeJRead(AppendJRead(nil, "vdisk-2", 8)); err != nil || name != "vdisk-2" || seal != 8 {
		t.Fatalf("jread: %q %d %v", name, seal, err)
	}
	if name, e, s, err := DecodeJTrim(AppendJTrim(nil, "vdisk-3", journal.All, journal.All)); err != nil || name != "vdisk-3" || e != journal.All || s != journal.All {
		t.Fatalf("jtrim: %q %d %d %v", name, e, s, err)
	}
	for _, rs := range [][]journal.Record{recs, nil, recs[1:2]} {
		got, err := DecodeJRecords(bytes.Join(JRecordsParts(rs), nil))
		if err != nil || !sameRecords(got, rs) {
			t.Fatalf("jrecords: %v %v", got, err)
		}
	}
	for _, s := range []error{journal.ErrFenced, journal.ErrInvalid, journal.ErrFull} {
		err := DecodeError(AppendError(nil, fmt.Errorf("%w: journal \"x\" is sealed at epoch 5", s)))
		if !errors.Is(err, s) || strings.Count(err.Error(), s.Error()) != 1 || !strings.Contains(err.Error(), "sealed at epoch 5") {
			t.Fatalf("error frame for %v: %v", s, err)
		}
	}
	for _, typ := range []byte{TypeJAppend, TypeJRead, TypeJTrim, TypeGetRng} {
		if !IsRequest(typ) {
			t.Fatalf("type %d is not a request", typ)
		}
	}
	if IsRequest(TypeJRecs) || IsRequest(TypeGetRng+1) || IsRequest(TypeRngItem) {
		t.Fatal("IsRequest too wide")
	}
}

func TestJournalMalformed(t *testing.T) {
	p := bytes.Join(JAppendParts("vd", 1, sampleRecords()), nil)
	for i := range len(p) {
		if _, _, _, err := DecodeJAppend(p[:i]); !errors.Is(err, ErrProtocol) {
			t.Fatalf("jappend truncated at %d: %v", i, err)
		}
	}
	// A record count that cannot fit is refused before allocating.
	huge := binary.LittleEndian.AppendUint32(nil, 1<<31)
	if _, err := DecodeJRecords(append(huge, make([]byte, 40)...)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("huge count: %v", err)
	}
	// More records than an append may carry.
	tooMany := appendStr(nil, "vd")
	tooMany = binary.LittleEndian.AppendUint64(tooMany, 1)
	tooMany = binary.LittleEndian.AppendUint32(tooMany, journal.MaxRecords+1)
	tooMany = append(tooMany, make([]byte, jRecHead*(journal.MaxRecords+1))...)
	if _, _, _, err := DecodeJAppend(tooMany); !errors.Is(err, ErrProtocol) {
		t.Fatalf("too many records: %v", err)
	}
	if _, _, err := DecodeJRead(append(AppendJRead(nil, "vd", 1), 0)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	// A frame length beyond the limit.
	if _, _, err := ReadFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 0}), nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("huge frame: %v", err)
	}
	// A count that cannot fit.
	if _, err := DecodeKeys([]byte{0xff, 0xff, 0, 0, 1, 2, 3}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad count: %v", err)
	}
	// Trailing bytes.
	if _, err := DecodeU32([]byte{1, 0, 0, 0, 9}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("trailing: %v", err)
	}
	// A put whose data is shorter than its header says.
	p := bytes.Join(PutParts(sampleShards()), nil)
	if _, err := DecodePut(p[:len(p)-1]); !errors.Is(err, ErrProtocol) {
		t.Fatalf("truncated put: %v", err)
	}
}

func TestHandshake(t *testing.T) {
	run := func(cs, ss []byte) (cerr, serr error) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		done := make(chan error, 1)
		go func() { done <- ServerHandshake(b, ss) }()
		cerr = ClientHandshake(a, cs)
		if cerr != nil {
			a.Close()
		}
		return cerr, <-done
	}
	if c, s := run([]byte("secret-secret-01"), []byte("secret-secret-01")); c != nil || s != nil {
		t.Fatalf("same secret: %v %v", c, s)
	}
	if c, _ := run([]byte("secret-secret-01"), []byte("secret-secret-02")); !errors.Is(c, ErrAuth) {
		t.Fatalf("different secret: client got %v", c)
	}
	// A client speaking garbage.
	a, b := net.Pipe()
	defer a.Close()
	go a.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n and more bytes to fill"))
	if err := ServerHandshake(b, []byte("s")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage hello: %v", err)
	}
	b.Close()
}

// TestRangeRoundTrip: ranged requests and their items go and come back;
// an item whose range lies past its shard is refused.
func TestRangeRoundTrip(t *testing.T) {
	sh := sampleShards()[2]
	rs := []chunkstore.ShardRange{{Key: sh.Key, Off: 1, Len: 3}, {Key: sh.Key, Off: 5, Len: 0}}
	got, err := DecodeRanges(AppendRanges(nil, rs))
	if err != nil || len(got) != 2 || got[0] != rs[0] || got[1] != rs[1] {
		t.Fatalf("ranges: %v %v", got, err)
	}
	part := sh
	part.Data = sh.Data[1:4]
	idx, res, off, err := DecodeRangeItem(append(RangeItemHeader(nil, 7, part, 1, nil), part.Data...))
	if err != nil || idx != 7 || off != 1 || res.Err != nil || res.Shard.ShardInfo != sh.ShardInfo || !bytes.Equal(res.Shard.Data, sh.Data[1:4]) {
		t.Fatalf("item: %d %d %+v %v", idx, off, res, err)
	}
	_, res, _, err = DecodeRangeItem(RangeItemHeader(nil, 0, chunkstore.Shard{}, 0, fmt.Errorf("%w: past the end", chunkstore.ErrBadRange)))
	if err != nil || !errors.Is(res.Err, chunkstore.ErrBadRange) {
		t.Fatalf("error item: %v %v", res.Err, err)
	}
	if _, _, _, err := DecodeRangeItem(append(RangeItemHeader(nil, 0, part, 3, nil), part.Data...)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a range past its shard decoded: %v", err)
	}
	if _, err := DecodeRanges(AppendRanges(nil, rs)[:20]); !errors.Is(err, ErrProtocol) {
		t.Fatalf("truncated ranges decoded: %v", err)
	}
}
