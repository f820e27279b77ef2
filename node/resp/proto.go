package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits, as Redis: a bulk string up to 512 MiB is legal there; a node
// agent needs far less, so requests are bounded tighter.
const (
	MaxArgs      = 1 << 16
	MaxBulk      = 64 << 20
	MaxInline    = 64 << 10
	MaxTotalSize = 128 << 20
)

// ErrProtocol marks malformed input; the connection is closed after the
// error reply.
var ErrProtocol = errors.New("resp: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ReadCommand reads one command: an array of bulk strings, or an inline
// command line. It returns io.EOF at a clean end of stream.
func ReadCommand(r *bufio.Reader) ([][]byte, error) {
	b, err := r.Peek(1)
	if err != nil {
		return nil, err
	}
	if b[0] != '*' {
		return readInline(r)
	}
	line, err := readLine(r, MaxInline)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(string(line[1:]))
	if err != nil || n > MaxArgs {
		return nil, protoErr("invalid multibulk length")
	}
	if n <= 0 {
		return nil, nil // *0 and *-1 are empty commands, ignored by Redis
	}
	args := make([][]byte, 0, min(n, 64))
	total := 0
	for i := 0; i < n; i++ {
		line, err := readLine(r, MaxInline)
		if err != nil {
			return nil, eofIsUnexpected(err)
		}
		if len(line) == 0 || line[0] != '$' {
			return nil, protoErr("expected '$', got '%s'", printable(line))
		}
		size, err := strconv.Atoi(string(line[1:]))
		if err != nil || size < 0 || size > MaxBulk {
			return nil, protoErr("invalid bulk length")
		}
		total += size
		if total > MaxTotalSize {
			return nil, protoErr("request larger than %d bytes", MaxTotalSize)
		}
		buf, err := readBulk(r, size+2)
		if err != nil {
			return nil, eofIsUnexpected(err)
		}
		if buf[size] != '\r' || buf[size+1] != '\n' {
			return nil, protoErr("bulk string not terminated by CRLF")
		}
		args = append(args, buf[:size])
	}
	return args, nil
}

// readBulk reads n bytes. Large bodies are read in growing steps, so a
// client that announces a big bulk string and sends little makes the
// server allocate only what arrived.
func readBulk(r *bufio.Reader, n int) ([]byte, error) {
	const step = 1 << 20
	if n <= step {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf := make([]byte, 0, step)
	for len(buf) < n {
		if cap(buf) == len(buf) {
			buf = append(buf, make([]byte, min(cap(buf), n-len(buf)))...)[:len(buf)]
		}
		m, err := io.ReadFull(r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, protoErr("line longer than %d bytes", limit)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(line) > 0 {
				return nil, eofIsUnexpected(err)
			}
			return nil, err
		}
		break
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readInline parses a telnet-style command: words separated by spaces,
// with "double" and 'single' quotes as redis-cli writes them.
func readInline(r *bufio.Reader) ([][]byte, error) {
	line, err := readLine(r, MaxInline)
	if err != nil {
		return nil, err
	}
	var args [][]byte
	for i := 0; i < len(line); {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i >= len(line) {
			break
		}
		var arg []byte
		switch q := line[i]; q {
		case '"', '\'':
			i++
			closed := false
			for i < len(line) {
				c := line[i]
				if c == '\\' && q == '"' && i+1 < len(line) {
					i++
					switch line[i] {
					case 'n':
						arg = append(arg, '\n')
					case 'r':
						arg = append(arg, '\r')
					case 't':
						arg = append(arg, '\t')
					default:
						arg = append(arg, line[i])
					}
					i++
					continue
				}
				if c == q {
					closed = true
					i++
					break
				}
				arg = append(arg, c)
				i++
			}
			if !closed {
				return nil, protoErr("unbalanced quotes in request")
			}
			if i < len(line) && line[i] != ' ' && line[i] != '\t' {
				return nil, protoErr("unbalanced quotes in request")
			}
		default:
			for i < len(line) && line[i] != ' ' && line[i] != '\t' {
				arg = append(arg, line[i])
				i++
			}
		}
		args = append(args, arg)
	}
	return args, nil
}

func printable(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 32 || c > 126 {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// Writer writes RESP2 replies.
type Writer struct{ w *bufio.Writer }

// NewWriter wraps w.
func NewWriter(w *bufio.Writer) *Writer { return &Writer{w: w} }

// Simple writes +s.
func (w *Writer) Simple(s string) { w.w.WriteString("+" + s + "\r\n") }

// Error writes -s (s must hold no newline).
func (w *Writer) Error(s string) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			s = s[:i]
			break
		}
	}
	w.w.WriteString("-" + s + "\r\n")
}

// Int writes :n.
func (w *Writer) Int(n int64) { w.w.WriteString(":" + strconv.FormatInt(n, 10) + "\r\n") }

// Bulk writes $len b.
func (w *Writer) Bulk(b []byte) {
	w.w.WriteString("$" + strconv.Itoa(len(b)) + "\r\n")
	w.w.Write(b)
	w.w.WriteString("\r\n")
}

// Null writes the null bulk string.
func (w *Writer) Null() { w.w.WriteString("$-1\r\n") }

// Array writes an array header of n elements.
func (w *Writer) Array(n int) { w.w.WriteString("*" + strconv.Itoa(n) + "\r\n") }

// NullArray writes *-1 (a timed-out blocking pop).
func (w *Writer) NullArray() { w.w.WriteString("*-1\r\n") }

// Flush flushes buffered replies.
func (w *Writer) Flush() error { return w.w.Flush() }
