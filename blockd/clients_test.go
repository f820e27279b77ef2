package blockd

// Tests with real NBD clients (nbdinfo, qemu-img, qemu-io, nbdcopy, fio,
// nbdfuse + mkfs.ext4 + mount, qemu-system-x86_64) against vdisks served by
// the real NBD server over a Service on this package's loopback range.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("blockd")

const mib = 1 << 20

func requireBin(t *testing.T, names ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("tests with external clients do not run with -short")
	}
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not found in PATH: install the test dependencies with scripts/deps.sh test", n)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// node is one blockd Service with its NBD server.
type node struct {
	id   string
	svc  *Service
	srv  *nbd.Server
	addr string
	done chan error
}

func (n *node) uri(export string) string { return "nbd://" + n.addr + "/" + export }

// startNode serves a Service for node id on ip (in lo).
func (e *env) startNode(t *testing.T, id, ip string, mod func(*Config)) *node {
	t.Helper()
	svc := e.service(t, id, mod)
	srv, err := nbd.New(nbd.Config{Exports: svc.Exports(), Logger: slogx.Discard, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, svc: svc, srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop closes the server (connections end and release their vdisks) and
// the service.
func (n *node) stop(t *testing.T) {
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.srv.Shutdown(ctx)
	select {
	case <-n.done:
	case <-time.After(time.Minute):
		t.Errorf("NBD server of %s did not stop", n.id)
	}
	n.svc.Close()
	n.srv = nil
}

// writeImage writes a deterministic file of size bytes: random data with
// zero runs (holes for the thin store).
func writeImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, 9))
	buf := make([]byte, mib)
	for off := int64(0); off < size; off += mib {
		switch rng.IntN(4) {
		case 0:
			clear(buf)
		default:
			for i := 0; i < len(buf); i += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					buf[i+k] = byte(v >> (8 * k))
				}
			}
			z := buf[rng.IntN(len(buf)):]
			clear(z[:min(len(z), rng.IntN(len(buf)/2))])
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			t.Fatal(err)
		}
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestClientNbdinfo(t *testing.T) {
	requireBin(t, "nbdinfo", "qemu-io")
	e := newEnv()
	n1 := e.startNode(t, "n1", lo+"2", nil)
	n2 := e.startNode(t, "n2", lo+"3", nil)
	ctx := context.Background()
	mustCreate(t, n1.svc, "disk", 64*mib, 65536, "db")
	mustCreate(t, n1.svc, "other", 8*mib, 4096, "cache")

	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	out := run(t, "nbdinfo", "--json", n1.uri("disk"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo json: %v\n%s", err, out)
	}
	x := info.Exports[0]
	for k, want := range map[string]any{"export-size": float64(64 * mib), "can_flush": true, "can_trim": true,
		"can_zero": true, "can_fast_zero": true, "can_multi_conn": true, "is_read_only": false, "block_size_preferred": float64(65536)} {
		if x[k] != want {
			t.Errorf("nbdinfo %s = %v, want %v", k, x[k], want)
		}
	}

	// Data at the first and last 4 KiB, read back with a pattern check.
	last := fmt.Sprint(64*mib - 4096)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 4k", "-c", "write -P 0xab "+last+" 4k", n1.uri("disk"))
	out = run(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 4k", "-c", "read -P 0xab "+last+" 4k", "-c", "read -P 0 4k 60k", n1.uri("disk"))
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("pattern mismatch:\n%s", out)
	}
	// Block status: data in the first and last 64 KiB block, a hole between.
	out = run(t, "nbdinfo", "--map", "--json", n1.uri("disk"))
	var m []struct {
		Offset int64  `json:"offset"`
		Length int64  `json:"length"`
		Type   int    `json:"type"`
		Desc   string `json:"description"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("map json: %v\n%s", err, out)
	}
	want := fmt.Sprint([]int64{0, 65536, 0, 65536, 64*mib - 131072, 3, 64*mib - 65536, 65536, 0})
	var got []int64
	for _, e := range m {
		got = append(got, e.Offset, e.Length, int64(e.Type))
	}
	if fmt.Sprint(got) != want {
		t.Fatalf("map %v, want %v\n%s", got, want, out)
	}
	// The data was flushed when qemu-io disconnected: it is in the tree.
	im, _ := n1.svc.Image(ctx, "disk", "")
	if im.Head.IsZero() {
		t.Fatal("head not committed after the client disconnected")
	}

	// List shows every vdisk.
	out = run(t, "nbdinfo", "--list", "--json", "nbd://"+n1.addr)
	if !strings.Contains(out, `"disk"`) || !strings.Contains(out, `"other"`) {
		t.Fatalf("list:\n%s", out)
	}

	// While n1 holds disk read-write, n2 refuses a read-write attach with a
	// clear message and allows read-only ones.
	_, rel, err := n1.svc.Open(ctx, "disk")
	if err != nil {
		t.Fatal(err)
	}
	// qemu prints the server's message; libnbd only with LIBNBD_DEBUG.
	out, err = runErr(t, "qemu-img", "info", n2.uri("disk"))
	if err == nil || !strings.Contains(out, "vdisk disk is attached read-write on node n1") {
		t.Fatalf("second read-write attach: %v\n%s", err, out)
	}
	t.Logf("qemu-img on a second read-write attach:\n%s", out)
	if out, err := runErr(t, "nbdinfo", n2.uri("disk")); err == nil {
		t.Fatalf("nbdinfo attached read-write twice:\n%s", out)
	}
	out = run(t, "nbdinfo", "--json", n2.uri("disk:ro"))
	if !strings.Contains(out, `"is_read_only": true`) {
		t.Fatalf("read-only attach:\n%s", out)
	}
	out = run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 0 4k", n2.uri("disk:ro"))
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("read-only pattern:\n%s", out)
	}
	rel()
	// Detached: n2 can attach read-write now.
	run(t, "nbdinfo", n2.uri("disk"))
	// Unknown exports and snapshots are NBD errors, not crashes.
	for _, name := range []string{"nope", "disk@nope", "disk@", "a/b"} {
		if out, err := runErr(t, "nbdinfo", n1.uri(name)); err == nil {
			t.Fatalf("export %q opened:\n%s", name, out)
		}
	}
}

func TestClientQemuImg(t *testing.T) {
	requireBin(t, "qemu-img")
	e := newEnv()
	n := e.startNode(t, "n1", lo+"4", nil)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	writeImage(t, src, 96*mib, 1)
	mustCreate(t, n.svc, "img", 96*mib, 65536, "boot")
	out := run(t, "qemu-img", "info", "--output=json", n.uri("img"))
	if !strings.Contains(out, fmt.Sprintf(`"virtual-size": %d`, 96*mib)) {
		t.Fatalf("qemu-img info:\n%s", out)
	}
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, n.uri("img"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, n.uri("img"))
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", n.uri("img"), dst)
	if fileHash(t, src) != fileHash(t, dst) {
		t.Fatal("qemu-img convert out differs")
	}
	// compare notices a difference.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 5M 512", n.uri("img"))
	if out, err := runErr(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, n.uri("img")); err == nil {
		t.Fatalf("compare missed a change:\n%s", out)
	}
}

func TestClientNbdcopy512MiB(t *testing.T) {
	requireBin(t, "nbdcopy")
	e := newEnv()
	n := e.startNode(t, "n1", lo+"5", nil)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	const size = 512 * mib
	writeImage(t, src, size, 2)
	mustCreate(t, n.svc, "big", size, 65536, "db")
	run(t, "nbdcopy", "--flush", src, n.uri("big"))
	run(t, "nbdcopy", n.uri("big"), dst)
	if fileHash(t, src) != fileHash(t, dst) {
		t.Fatal("nbdcopy in and out: files differ")
	}
	// Zero MiBs of the source were not stored.
	info, err := n.svc.Get(context.Background(), "big", true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Allocated >= size {
		t.Fatalf("allocated %d of %d: holes were stored", info.Allocated, size)
	}
}

// fio writes checksummed blocks; the vdisk is then closed (its node stops)
// and another node's fresh engine serves the read-verify.
func TestClientFioVerifyAfterReopen(t *testing.T) {
	requireBin(t, "fio")
	e := newEnv()
	n1 := e.startNode(t, "n1", lo+"6", func(c *Config) { c.MaxDirtyBytes = 16 * mib })
	mustCreate(t, n1.svc, "fio", 256*mib, 65536, "db")
	common := func(n *node) []string {
		return []string{"--name=verify", "--ioengine=nbd", "--uri=" + n.uri("fio"),
			"--rw=randwrite", "--bs=4k", "--size=128M", "--iodepth=32", "--verify=crc32c",
			"--randseed=4321", "--output-format=json", "--verify_state_save=0"}
	}
	run(t, "fio", append(common(n1), "--do_verify=0")...)
	n1.stop(t)
	n2 := e.startNode(t, "n2", lo+"7", nil)
	out := run(t, "fio", append(common(n2), "--verify_only")...)
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("fio json: %v\n%s", err, out)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Read.IOBytes < 128*mib {
		t.Fatalf("fio verify: %+v\n%s", res, out)
	}
	// The verification can fail: overwrite and verify again.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 128M", n2.uri("fio"))
	if out, err := runErr(t, "fio", append(common(n2), "--verify_only")...); err == nil {
		t.Fatalf("fio verify passed on overwritten data:\n%s", out)
	}
}

// fuseDisk is a vdisk exposed as a file with nbdfuse.
type fuseDisk struct {
	dir  string
	cmd  *exec.Cmd
	out  bytes.Buffer
	stop func()
}

func (f *fuseDisk) file() string { return filepath.Join(f.dir, "nbd") }

func startFuse(t *testing.T, uri string) *fuseDisk {
	t.Helper()
	f := &fuseDisk{dir: t.TempDir()}
	f.cmd = exec.Command("nbdfuse", f.dir, uri)
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.out
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { f.cmd.Wait(); close(exited) }()
	// Registered before the mount is waited for, so that every way out
	// of this function (a fatal timeout included) unmounts.
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		exec.Command("fusermount3", "-u", f.dir).Run()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			f.cmd.Process.Kill()
			<-exited
		}
		// A killed (or crashed) nbdfuse leaves a dead mount ("transport
		// endpoint is not connected") that TempDir's cleanup cannot
		// remove: detach whatever is still mounted there.
		if mounted(f.dir) {
			exec.Command("fusermount3", "-u", "-z", f.dir).Run()
		}
	}
	t.Cleanup(stop)
	f.stop = stop
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(f.file()); err == nil && st.Size() > 0 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("nbdfuse exited: %s", f.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse did not mount: %s", f.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

// mounted reports whether dir is a mount point (in /proc/self/mounts).
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

func (f *fuseDisk) unmount() { f.stop() }

// mountExt4 loop-mounts file at a new directory; the returned func
// unmounts it.
func mountExt4(t *testing.T, file string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-o", "loop", file, dir)
	done := false
	umount := func() {
		if !done {
			done = true
			run(t, "umount", dir)
		}
	}
	t.Cleanup(umount)
	return dir, umount
}

func TestClientExt4SnapshotCloneRollback(t *testing.T) {
	requireBin(t, "nbdfuse", "fusermount3", "mkfs.ext4", "mount", "umount")
	e := newEnv()
	n := e.startNode(t, "n1", lo+"8", nil)
	ctx := context.Background()
	mustCreate(t, n.svc, "fs", 256*mib, 65536, "db")
	payload := randImage(5, 3*mib+123, 0)

	// Make a file system and write files.
	f := startFuse(t, n.uri("fs"))
	run(t, "mkfs.ext4", "-q", "-F", f.file())
	mnt, umount := mountExt4(t, f.file())
	os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte("hello from zos\n"), 0o644)
	os.WriteFile(filepath.Join(mnt, "payload.bin"), payload, 0o644)
	umount()
	f.unmount()

	if _, err := n.svc.Snapshot(ctx, "fs", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.svc.Clone(ctx, "fs", "s1", "fs-clone", ""); err != nil {
		t.Fatal(err)
	}
	// The clone has the files.
	fc := startFuse(t, n.uri("fs-clone"))
	mc, umountc := mountExt4(t, fc.file())
	if b, err := os.ReadFile(filepath.Join(mc, "hello.txt")); err != nil || string(b) != "hello from zos\n" {
		t.Fatalf("clone hello.txt: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mc, "payload.bin")); err != nil || !bytes.Equal(b, payload) {
		t.Fatalf("clone payload.bin differs: %v", err)
	}
	umountc()
	fc.unmount()

	// Change the origin, then roll it back.
	f = startFuse(t, n.uri("fs"))
	mnt, umount = mountExt4(t, f.file())
	os.Remove(filepath.Join(mnt, "hello.txt"))
	os.WriteFile(filepath.Join(mnt, "new.txt"), []byte("after the snapshot"), 0o644)
	umount()
	f.unmount()
	waitDetached(t, n.svc, "fs")
	if _, err := n.svc.Rollback(ctx, "fs", "s1"); err != nil {
		t.Fatal(err)
	}
	f = startFuse(t, n.uri("fs"))
	mnt, umount = mountExt4(t, f.file())
	if _, err := os.Stat(filepath.Join(mnt, "new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("new.txt survived the rollback: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil || string(b) != "hello from zos\n" {
		t.Fatalf("rolled back hello.txt: %q %v", b, err)
	}
	umount()
	f.unmount()
}

// waitDetached waits until no node holds the vdisk's read-write lease (the
// server releases it after the client's disconnect).
func waitDetached(t *testing.T, s *Service, name string) {
	t.Helper()
	wait.For(t, time.Minute, name+" to be detached", func() bool {
		in, err := s.Get(context.Background(), name, false)
		return err == nil && in.AttachedTo == ""
	})
}

// TestClientReadsFillHoles: the NBD server does not clear read buffers for
// a Disk (nbd.FullReader), so holes, zeroed and trimmed ranges must be
// written as zeroes by ReadAt itself, right after reads of data left those
// pooled buffers full of it.
func TestClientReadsFillHoles(t *testing.T) {
	requireBin(t, "qemu-io")
	e := newEnv()
	n := e.startNode(t, "n1", lo+"10", nil)
	mustCreate(t, n.svc, "holes", 64*mib, 65536, "boot")
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 16M", "-c", "write -z 4M 1M", "-c", "discard 6M 1M",
		"-c", "write -P 0xcd 9M 4k", "-c", "flush", n.uri("holes"))
	args := []string{"-f", "raw"}
	for range 3 { // the same sizes again and again: the server's pooled buffers come back full of 0xab
		args = append(args, "-c", "read -P 0xab 0 4M", "-c", "read -P 0 4M 1M", "-c", "read -P 0xab 5M 1M",
			"-c", "read -P 0 6M 1M", "-c", "read -P 0 32M 4M", "-c", "read -P 0xab 8M 1M", "-c", "read -P 0 16M 1M")
	}
	out := run(t, "qemu-io", append(args, n.uri("holes"))...)
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "read ") != 21 {
		t.Fatalf("qemu-io:\n%s", out)
	}
	out = run(t, "qemu-io", "-f", "raw", "-c", "read -P 0xcd 9M 4k", "-c", "read -P 0xab 9220k 1020k", n.uri("holes"))
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
}
