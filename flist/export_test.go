package flist

import (
	"io"

	"github.com/cockroachdb/pebble/v2/sstable"
)

func newRawSSTWriter(w io.Writer) *sstable.Writer {
	return sstable.NewWriter(&writable{w: w}, sstable.WriterOptions{TableFormat: sstable.TableFormatPebblev4})
}
