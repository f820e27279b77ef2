package journal

import (
	"bytes"
	"testing"
)

// FuzzScanFile feeds arbitrary file contents to the parsers of a journal
// file (header, then frames): they must not panic, and what they accept
// must be frames this package writes — re-encoding the records of each
// good frame gives back its bytes.
func FuzzScanFile(f *testing.F) {
	hdr := encodeHeader("vd")
	good := append([]byte(nil), hdr...)
	for i, recs := range [][]Record{
		{{Epoch: 1, Seq: 1, Payload: []byte("abc")}},
		{{Epoch: 2, Seq: 5, Payload: nil}, {Epoch: 2, Seq: 6, Payload: bytes.Repeat([]byte{7}, 100)}},
	} {
		parts, _ := frameParts(recs[0].Epoch, recs)
		for _, p := range parts {
			good = append(good, p...)
		}
		f.Add(good)
		if i == 1 {
			f.Add(good[:len(good)-3])                         // torn tail
			f.Add(append(append([]byte(nil), good...), 1, 2)) // garbage after
		}
	}
	f.Add([]byte("not a journal"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseHeader(data, "vd")
		if err != nil {
			return
		}
		frames, recs, end, err := scanFrames(data, n, true)
		if err != nil {
			return
		}
		if end < 0 || n+end > len(data) {
			t.Fatalf("scan ends at %d of %d bytes", n+end, len(data))
		}
		// Frame by frame, what was accepted re-encodes to its bytes.
		off, total := n, 0
		for range frames {
			next, epoch, rs, why := parseFrame(data, off, nil)
			if why != "" {
				t.Fatalf("frame at %d accepted by the scan, refused alone: %s", off, why)
			}
			parts, size := frameParts(epoch, rs)
			var again []byte
			for _, p := range parts {
				again = append(again, p...)
			}
			if int64(next-off) != size || !bytes.Equal(again, data[off:next]) {
				t.Fatalf("frame at %d does not re-encode to its bytes", off)
			}
			total += len(rs)
			off = next
		}
		if off != n+end || total != len(recs) {
			t.Fatalf("frames end at %d with %d records; the scan said %d with %d", off, total, n+end, len(recs))
		}
	})
}
