// Package console keeps a VM's serial console in a bounded log on disk and
// lets readers follow it.
//
// A Log is two files, NAME (current) and NAME.1 (previous). Writes append to
// NAME; when NAME reaches half the cap it is renamed over NAME.1 and a new
// NAME is started, so the log never holds more than Cap bytes on disk and a
// reader always finds at least the last Cap/2 bytes (0-core #71: a chatty
// guest must not fill the node's disk).
//
// Usage:
//
//	l, _ := console.Open(path, 1<<20)
//	go io.Copy(l, serialConn)     // one writer
//	r := l.Reader(true)           // any number of readers; follow=true waits for more
//	io.Copy(w, r)                 // returns when r.Close is called or the log is closed
//
// Guarantees: a Write is one append to the current file (no partial
// rotation in the middle of a Write); a Reader returns bytes in the order
// they were written, starting with the oldest kept byte, and skips bytes
// that were rotated away while it lagged by more than Cap/2 (it never
// blocks the writer). A Log is safe for concurrent use.
package console
