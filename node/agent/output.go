package agent

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"sync"
)

// ring keeps the last max bytes written to it.
type ring struct {
	max   int
	buf   []byte
	start int // when full: the oldest byte, where the next write goes
	full  bool
}

func newRing(max int) *ring { return &ring{max: max} }

func (r *ring) Write(p []byte) {
	if r.max <= 0 {
		return
	}
	if len(p) >= r.max {
		r.buf = append(r.buf[:0], p[len(p)-r.max:]...)
		r.start, r.full = 0, true
		return
	}
	if !r.full {
		if len(r.buf)+len(p) <= r.max {
			r.buf = append(r.buf, p...)
			return
		}
		nb := make([]byte, r.max)
		n := copy(nb, r.buf)
		p = p[copy(nb[n:], p):]
		r.buf, r.start, r.full = nb, 0, true
	}
	for len(p) > 0 {
		n := copy(r.buf[r.start:], p)
		r.start = (r.start + n) % r.max
		p = p[n:]
	}
}

func (r *ring) String() string {
	if !r.full {
		return string(r.buf)
	}
	return string(r.buf[r.start:]) + string(r.buf[:r.start])
}

// maxLine splits longer output lines.
const maxLine = 64 << 10

// lineReader reads lines of at most maxLine bytes (a longer line comes out
// in pieces).
func readLines(rd io.Reader, emit func(line string)) {
	br := bufio.NewReaderSize(rd, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			emit(string(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))))
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}

// parser turns the lines of one output stream into leveled messages, as
// 0-core: "N::: message" is one message at level N; a line "N:::" opens a
// block of lines ended by a line ":::", sent as one message at level N.
// Other lines are messages at the stream's level (1 stdout, 2 stderr).
type parser struct {
	level    int // the stream's own level
	emit     func(level int, msg string)
	block    bool
	blockLvl int
	buf      bytes.Buffer
	max      int
}

func (p *parser) line(l string) {
	if p.block {
		if l == ":::" {
			p.block = false
			p.emit(p.blockLvl, p.buf.String())
			p.buf.Reset()
			return
		}
		if p.buf.Len() < p.max {
			if p.buf.Len() > 0 {
				p.buf.WriteByte('\n')
			}
			p.buf.WriteString(l)
		}
		return
	}
	if lvl, rest, ok := levelPrefix(l); ok {
		if rest == "" {
			p.block, p.blockLvl = true, lvl
			return
		}
		if len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		p.emit(lvl, rest)
		return
	}
	p.emit(p.level, l)
}

// flush ends an unterminated block at EOF.
func (p *parser) flush() {
	if p.block {
		p.block = false
		p.emit(p.blockLvl, p.buf.String())
		p.buf.Reset()
	}
}

func levelPrefix(l string) (int, string, bool) {
	i := 0
	for i < len(l) && i < 3 && l[i] >= '0' && l[i] <= '9' {
		i++
	}
	if i == 0 || len(l) < i+3 || l[i:i+3] != ":::" {
		return 0, "", false
	}
	lvl, err := strconv.Atoi(l[:i])
	if err != nil || lvl < 1 || lvl > 255 {
		return 0, "", false
	}
	return lvl, l[i+3:], true
}

// capture collects a job's output: bounded tails of stdout and stderr and
// the last level-20 message, and forwards each message to a sink.
type capture struct {
	mu      sync.Mutex
	streams [2]*ring
	data    string
	hasData bool
	maxData int
	sink    func(level int, msg string)
}

func newCapture(maxOut int, sink func(level int, msg string)) *capture {
	return &capture{streams: [2]*ring{newRing(maxOut), newRing(maxOut)}, maxData: maxOut, sink: sink}
}

func (c *capture) message(level int, msg string) {
	c.mu.Lock()
	switch level {
	case LevelResult:
		if len(msg) > c.maxData {
			msg = msg[:c.maxData]
		}
		c.data, c.hasData = msg, true
	case LevelStderr:
		c.streams[1].Write([]byte(msg + "\n"))
	default:
		c.streams[0].Write([]byte(msg + "\n"))
	}
	c.mu.Unlock()
	if c.sink != nil {
		c.sink(level, msg)
	}
}

func (c *capture) result() (streams [2]string, data string, hasData bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return [2]string{c.streams[0].String(), c.streams[1].String()}, c.data, c.hasData
}
