package journal

import (
	"fmt"
	"slices"

	"github.com/zosproject/zos/chunkstore"
)

// RefOf is the Ref a journal is placed by: BLAKE3-256 of
// "zos journal\x00" + name. A Dir names its files after it too.
func RefOf(name string) chunkstore.Ref { return chunkstore.Sum([]byte("zos journal\x00" + name)) }

// CheckName reports whether name can name a journal (ErrInvalid if not):
// 1 to MaxName bytes.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty journal name", ErrInvalid)
	case len(name) > MaxName:
		return fmt.Errorf("%w: journal name of %d bytes exceeds %d", ErrInvalid, len(name), MaxName)
	}
	return nil
}

// CheckAppend reports whether an Append's arguments are valid (ErrInvalid
// if not): a good name, an epoch in [1, All), 1 to MaxRecords records, all
// of that epoch, with strictly increasing sequence numbers ((Epoch, Seq)
// names a record: a Read keeps one record per pair), and at most MaxBytes
// in all.
func CheckAppend(name string, epoch uint64, recs []Record) error {
	if err := CheckName(name); err != nil {
		return err
	}
	switch {
	case epoch == 0 || epoch == All:
		return fmt.Errorf("%w: journal %q: epoch %d (want 1 to 2^64-2)", ErrInvalid, name, epoch)
	case len(recs) == 0:
		return fmt.Errorf("%w: journal %q: an append of no records", ErrInvalid, name)
	case len(recs) > MaxRecords:
		return fmt.Errorf("%w: journal %q: an append of %d records exceeds %d", ErrInvalid, name, len(recs), MaxRecords)
	}
	for i, r := range recs {
		if r.Epoch != epoch {
			return fmt.Errorf("%w: journal %q: record %d has epoch %d in an append at epoch %d", ErrInvalid, name, i, r.Epoch, epoch)
		}
		if i > 0 && r.Seq <= recs[i-1].Seq {
			return fmt.Errorf("%w: journal %q: record %d has seq %d after seq %d (seqs must increase)", ErrInvalid, name, i, r.Seq, recs[i-1].Seq)
		}
	}
	if c := cost(recs); c > MaxBytes {
		return fmt.Errorf("%w: journal %q: an append of %d bytes exceeds the %d limit", ErrInvalid, name, c, MaxBytes)
	}
	return nil
}

// cost is what recs count toward MaxBytes.
func cost(recs []Record) int64 {
	var n int64
	for _, r := range recs {
		n += int64(len(r.Payload)) + RecordOverhead
	}
	return n
}

// sortRecords sorts recs by (Epoch, Seq) and keeps one record per pair:
// the last of equal ones in recs' order (a retried append's copy).
func sortRecords(recs []Record) []Record {
	slices.SortStableFunc(recs, Compare)
	out := recs[:0]
	for i, r := range recs {
		if i+1 < len(recs) && Compare(r, recs[i+1]) == 0 {
			continue
		}
		out = append(out, r)
	}
	clear(recs[len(out):])
	return out
}
