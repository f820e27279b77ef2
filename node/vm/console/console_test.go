package console

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogBoundedAndOrdered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := Open(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var all bytes.Buffer
	for i := range 200 {
		line := fmt.Sprintf("line %04d\n", i)
		all.WriteString(line)
		if _, err := l.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	var onDisk int64
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		onDisk += st.Size()
	}
	if onDisk > 1000 {
		t.Fatalf("log holds %d bytes on disk, cap 1000", onDisk)
	}
	got, err := io.ReadAll(l.Reader(false))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 500 || !strings.HasSuffix(all.String(), string(got)) {
		t.Fatalf("reader got %d bytes, not a suffix of what was written:\n%s", len(got), got)
	}
}

func TestReaderFollowsAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := Open(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	r := l.Reader(true)
	defer r.Close()
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	var want strings.Builder
	for i := range 30 {
		s := fmt.Sprintf("%02d,", i) // 3 bytes: rotates every 16 writes
		want.WriteString(s)
		l.Write([]byte(s))
		time.Sleep(2 * time.Millisecond) // let the reader keep up (it may lag: then it skips, tested above)
	}
	l.Close()
	select {
	case s := <-got:
		if s != want.String() {
			t.Fatalf("follower read %q, want %q", s, want.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follower did not end after Close")
	}
}

func TestReaderCloseUnblocks(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "c.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := l.Reader(true)
	done := make(chan error)
	go func() { _, err := r.Read(make([]byte, 10)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Fatalf("Read after Close: %v, want EOF", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}
