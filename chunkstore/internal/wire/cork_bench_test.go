package wire

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkTLSFrames sends frames over TLS on loopback TCP, corked and
// not, and reports the CPU both ends spend per GiB (the figures behind
// CorkConn, in docs/benchmarks.md "Corked TLS writes"):
//
//	go test -run='^$' -bench=TLSFrames ./chunkstore/internal/wire
func BenchmarkTLSFrames(b *testing.B) {
	cert := testCert(b)
	for _, size := range []int{16 << 10, 512 << 10} {
		for _, corked := range []bool{false, true} {
			b.Run(fmt.Sprintf("frame=%dK/corked=%v", size>>10, corked), func(b *testing.B) {
				benchTLSFrames(b, cert, size, corked)
			})
		}
	}
}

func benchTLSFrames(b *testing.B, cert tls.Certificate, size int, corked bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	payload := make([]byte, size)
	done := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer raw.Close()
		raw.(*net.TCPConn).SetNoDelay(true)
		cork := NewCorkConn(raw)
		srv := tls.Server(cork, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := srv.Handshake(); err != nil {
			done <- err
			return
		}
		if !corked {
			cork = nil
		}
		for range b.N {
			if err := WriteFrameCorked(srv, cork, TypeOK, 1, payload); err != nil {
				done <- err
				return
			}
		}
		done <- srv.Close()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	cli := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	if err := cli.Handshake(); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReaderSize(cli, 64<<10)
	b.SetBytes(int64(size))
	b.ResetTimer()
	c0 := cpuTime()
	buf := make([]byte, size+64)
	for range b.N {
		if _, _, err := ReadFrame(br, buf); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - c0
	b.StopTimer()
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(size)/(1<<30)), "cpu-s/GiB")
}

func cpuTime() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
