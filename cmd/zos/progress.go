package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// countingReader reports the bytes read so far.
type countingReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.fn(c.n)
	return n, err
}

// byteProgress returns a progress callback (bytes so far) and its finish
// function: a bar when stderr is a terminal, a line every 5 s otherwise.
// progressReader wraps r so that reading it shows progress towards total
// bytes (byteProgress); done ends the display.
func progressReader(what string, r io.Reader, total int64) (_ io.Reader, done func()) {
	prog, done := byteProgress(what, total)
	return &countingReader{r: r, fn: prog}, done
}

// openProgress opens the file at path for reading with a progress line
// labelled what; done finishes the line and closes the file.
func openProgress(what, path string) (_ io.Reader, size int64, done func(), _ error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	body, finish := progressReader(what, f, st.Size())
	return body, st.Size(), func() { finish(); f.Close() }, nil
}

func byteProgress(what string, total int64) (func(int64), func()) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
		return func(n int64) { _ = bar.Set64(n) }, func() { _ = bar.Finish() }
	}
	start := time.Now()
	var last atomic.Int64
	last.Store(start.UnixNano())
	var cur atomic.Int64
	report := func(final bool) {
		n := cur.Load()
		el := time.Since(start).Seconds()
		rate := float64(n) / max(el, 1e-3)
		pct := ""
		if total > 0 {
			pct = fmt.Sprintf(" (%.0f%%)", 100*float64(n)/float64(total))
		}
		state := ""
		if final {
			state = " done"
		}
		fmt.Fprintf(os.Stderr, "%s: %s of %s%s, %s/s%s\n", what, humanBytes(n), humanBytes(max(total, 0)), pct, humanBytes(int64(rate)), state)
	}
	return func(n int64) {
			cur.Store(n)
			if now := time.Now().UnixNano(); now-last.Load() >= int64(5*time.Second) {
				last.Store(now)
				report(false)
			}
		}, func() {
			report(true)
		}
}
