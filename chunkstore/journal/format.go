package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/zosproject/zos/chunkstore"
)

// This file is the Dir's on-disk format (see doc of the package): the
// journal file's header, its frames, and the seal file.

// encodeHeader is a journal file's header: magic | name len u16 | name |
// crc32c u32 of the preceding bytes.
func encodeHeader(name string) []byte {
	b := append([]byte(fileMagic), 0, 0)
	binary.LittleEndian.PutUint16(b[len(fileMagic):], uint16(len(name)))
	b = append(b, name...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseHeader checks the header at the start of data and returns its size.
func parseHeader(data []byte, name string) (int, error) {
	m := len(fileMagic)
	if len(data) < m+2 || string(data[:m]) != fileMagic {
		return 0, fmt.Errorf("%w: not a journal file (bad magic)", chunkstore.ErrCorrupt)
	}
	n := m + 2 + int(binary.LittleEndian.Uint16(data[m:]))
	if len(data) < n+4 || crc32.Checksum(data[:n], castagnoli) != binary.LittleEndian.Uint32(data[n:]) {
		return 0, fmt.Errorf("%w: bad journal header", chunkstore.ErrCorrupt)
	}
	if got := string(data[m+2 : n]); got != name {
		return 0, fmt.Errorf("%w: the file holds journal %q", chunkstore.ErrCorrupt, got)
	}
	return n + 4, nil
}

// encodeSeal is a seal file: magic | name len u16 | name | seal u64 |
// crc32c u32 of the preceding bytes.
func encodeSeal(name string, seal uint64) []byte {
	b := append([]byte(sealMagic), 0, 0)
	binary.LittleEndian.PutUint16(b[len(sealMagic):], uint16(len(name)))
	b = append(b, name...)
	b = binary.LittleEndian.AppendUint64(b, seal)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// frameParts encodes one append as a frame, returned as parts (the
// payloads are not copied) and its size:
//
//	size u32 | crc32c u32 | epoch u64 | count u32 | count × (seq u64 | len u32 | payload)
//
// size counts the bytes after the crc, which covers them.
func frameParts(epoch uint64, recs []Record) ([][]byte, int64) {
	heads := make([]byte, framePrefix+frameHead+len(recs)*recHead)
	binary.LittleEndian.PutUint64(heads[8:], epoch)
	binary.LittleEndian.PutUint32(heads[16:], uint32(len(recs)))
	crc := crc32.Update(0, castagnoli, heads[framePrefix:framePrefix+frameHead])
	parts := make([][]byte, 0, 1+2*len(recs))
	size := frameHead
	start, pos := 0, framePrefix+frameHead
	for _, r := range recs {
		h := heads[pos : pos+recHead]
		binary.LittleEndian.PutUint64(h, r.Seq)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(r.Payload)))
		crc = crc32.Update(crc, castagnoli, h)
		crc = crc32.Update(crc, castagnoli, r.Payload)
		pos += recHead
		size += recHead + len(r.Payload)
		if len(r.Payload) > 0 {
			parts = append(parts, heads[start:pos], r.Payload)
			start = pos
		}
	}
	if start < pos {
		parts = append(parts, heads[start:pos])
	}
	binary.LittleEndian.PutUint32(heads[0:], uint32(size))
	binary.LittleEndian.PutUint32(heads[4:], crc)
	return parts, int64(framePrefix + size)
}

// parseFrame decodes the frame at data[off:], appending its records to
// recs (their payloads alias data). why says what is wrong if it is not a
// good frame.
func parseFrame(data []byte, off int, recs []Record) (next int, epoch uint64, out []Record, why string) {
	if len(data)-off < framePrefix {
		return 0, 0, recs, "truncated frame header"
	}
	size := int(binary.LittleEndian.Uint32(data[off:]))
	if size < minFrameBody || size > maxFrameBody {
		return 0, 0, recs, fmt.Sprintf("frame size %d", size)
	}
	if size > len(data)-off-framePrefix {
		return 0, 0, recs, fmt.Sprintf("frame of %d bytes runs past the end", size)
	}
	body := data[off+framePrefix : off+framePrefix+size]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
		return 0, 0, recs, "checksum mismatch"
	}
	epoch = binary.LittleEndian.Uint64(body)
	n := binary.LittleEndian.Uint32(body[8:])
	if epoch == 0 || n == 0 || n > MaxRecords {
		return 0, 0, recs, fmt.Sprintf("frame of epoch %d with %d records", epoch, n)
	}
	p := body[frameHead:]
	mark := len(recs)
	for range n {
		if len(p) < recHead {
			return 0, 0, recs[:mark], "records run past the frame"
		}
		seq := binary.LittleEndian.Uint64(p)
		l := int(binary.LittleEndian.Uint32(p[8:]))
		p = p[recHead:]
		if l > len(p) {
			return 0, 0, recs[:mark], "a payload runs past the frame"
		}
		recs = append(recs, Record{Epoch: epoch, Seq: seq, Payload: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return 0, 0, recs[:mark], fmt.Sprintf("%d bytes after the records", len(p))
	}
	return off + framePrefix + size, epoch, recs, ""
}

// scanFrames reads the frames of data from start: their descriptions
// (offsets relative to start), their records if keep, and the end of the
// last good one. A bad frame ends the scan: it and what follows are a torn
// tail (an append a crash interrupted), unless a good frame follows it,
// which means a damaged acknowledged append: chunkstore.ErrCorrupt.
func scanFrames(data []byte, start int, keep bool) (frames []frameInfo, recs []Record, end int, err error) {
	off := start
	for off < len(data) {
		mark := len(recs)
		next, epoch, out, why := parseFrame(data, off, recs)
		if why != "" {
			if followedByFrame(data, off) {
				return nil, nil, 0, fmt.Errorf("%w: bad frame at offset %d (%s) followed by good frames", chunkstore.ErrCorrupt, off, why)
			}
			break
		}
		rs := out[mark:]
		frames = append(frames, frameInfo{end: int64(next - start), epoch: epoch, lastSeq: rs[len(rs)-1].Seq, cost: cost(rs)})
		recs = out
		if !keep {
			recs = out[:0] // scratch for the next frame
		}
		off = next
	}
	if !keep {
		recs = nil
	}
	return frames, recs, off - start, nil
}

// followedByFrame reports whether the bad frame at off has a plausible size
// and a good frame right after it.
func followedByFrame(data []byte, off int) bool {
	if len(data)-off < framePrefix {
		return false
	}
	size := int(binary.LittleEndian.Uint32(data[off:]))
	if size < minFrameBody || size > maxFrameBody || size >= len(data)-off-framePrefix {
		return false
	}
	_, _, _, why := parseFrame(data, off+framePrefix+size, nil)
	return why == ""
}
