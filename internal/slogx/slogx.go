// Package slogx adapts the loggers of zos's dependencies (pebble, hashicorp
// raft's hclog) to log/slog, so every daemon writes one structured stream,
// and keeps recurring warnings rare (Rare).
package slogx

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Discard is a logger that drops everything (for tests and quiet tools).
var Discard = slog.New(slog.DiscardHandler)

// Pebble adapts l to pebble's Logger interface (Infof, Errorf, Fatalf).
// Pebble's info chatter is logged at debug level.
type Pebble struct{ L *slog.Logger }

func (p Pebble) Infof(format string, args ...any) {
	p.L.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (p Pebble) Errorf(format string, args ...any) {
	p.L.Error(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (p Pebble) Fatalf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	p.L.Error(msg, "fatal", true)
	panic("pebble: " + msg)
}

// HclogWriter returns an io.Writer for hclog's JSON output
// (hclog.LoggerOptions{JSONFormat: true, Output: w}) that re-emits each
// record through l with its level, message and fields.
func HclogWriter(l *slog.Logger) io.Writer { return &hclogWriter{l: l} }

type hclogWriter struct {
	mu  sync.Mutex
	buf []byte
	l   *slog.Logger
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *hclogWriter) emit(line []byte) {
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil {
		w.l.Info(string(line))
		return
	}
	level := slog.LevelInfo
	switch rec["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := rec["@message"].(string)
	attrs := make([]slog.Attr, 0, len(rec))
	for k, v := range rec {
		if strings.HasPrefix(k, "@") {
			continue
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
}
