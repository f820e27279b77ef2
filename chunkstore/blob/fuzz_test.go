package blob_test

import (
	"bytes"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
)

// FuzzDecodeManifest: arbitrary chunks never crash the decoder, and what it
// accepts re-encodes to the same bytes (the format is canonical).
func FuzzDecodeManifest(f *testing.F) {
	f.Add(blob.Manifest{Level: 1, Total: 5, Entries: []blob.Entry{{Ref: chunkstore.Sum(nil), Size: 5}}}.Encode())
	f.Add(blob.Manifest{Level: 2, Total: 9, Entries: []blob.Entry{{Size: 4}, {Size: 5}}}.Encode())
	f.Add([]byte(blob.Magic))
	f.Add([]byte("raw data"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := blob.DecodeManifest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Encode(), b) {
			t.Fatalf("manifest re-encodes differently")
		}
		var sum int64
		for _, e := range m.Entries {
			if e.Size <= 0 {
				t.Fatal("non-positive entry size accepted")
			}
			sum += e.Size
		}
		if sum != m.Total {
			t.Fatal("sizes do not add up")
		}
	})
}
