package flist

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// BenchmarkCutPoints measures how fast the chunkers find boundaries,
// against BLAKE3 (which every chunk also goes through) as the anchor.
func BenchmarkCutPoints(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.New(rand.NewSource(1)).Read(data)
	for _, c := range []Chunking{DefaultChunking, FixedChunking(1 << 20)} {
		b.Run(c.Name(), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				for d := data; len(d) > 0; {
					d = d[c.cutPoint(d[:min(len(d), c.Max)]):]
				}
			}
		})
	}
	b.Run("blake3-anchor", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			for d := data; len(d) > 0; d = d[min(len(d), 1<<20):] {
				chunkstore.Sum(d[:min(len(d), 1<<20)])
			}
		}
	})
}

type discardStore struct{}

func (discardStore) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	return chunkstore.Sum(data), nil
}

// BenchmarkBuildTar measures tar ingestion end to end (parse, chunk, hash)
// into a store that keeps nothing.
func BenchmarkBuildTar(b *testing.B) {
	var ents []tarEnt
	rng := rand.New(rand.NewSource(2))
	total := 0
	for i := 0; i < 2000; i++ {
		body := make([]byte, rng.Intn(64<<10))
		rng.Read(body)
		total += len(body)
		ents = append(ents, tarEnt{name: "d/" + string(rune('a'+i%26)) + "/f" + itoa(i), body: string(body)})
	}
	data := mkTar(b, ents...)
	b.SetBytes(int64(total))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := BuildTar(context.Background(), bytes.NewReader(data), &Options{Store: discardStore{}}); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string {
	return string(rune('0'+i/1000%10)) + string(rune('0'+i/100%10)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}
