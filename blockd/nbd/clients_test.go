package nbd_test

// Tests with the real NBD clients users run: nbdinfo, nbdcopy (libnbd),
// qemu-img and qemu-io (qemu's NBD client) and fio's nbd engine. CI
// installs them with scripts/deps.sh; a missing one fails the test.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
)

func requireBin(t *testing.T, names ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("external NBD clients are not run with -short")
	}
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not found in PATH: install it with scripts/deps.sh test (Debian: libnbd-bin qemu-utils fio)", n)
		}
	}
}

// run runs a command with a generous timeout and returns its stdout; it
// fails the test with stderr on error.
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func (ts *testServer) uri(name string) string { return "nbd://" + ts.addr + "/" + name }

func TestNbdinfo(t *testing.T) {
	requireBin(t, "nbdinfo", "qemu-io")
	ts := startServer(t, nbd.Config{})
	mem := ts.addMem(t, "disk", 64*mib, nbd.ExportInfo{MultiConn: true, BlockSize: 65536, Description: "a test disk"})
	ts.addMem(t, "ro", 8*mib, nbd.ExportInfo{ReadOnly: true})

	var info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Contexts    []string `json:"contexts"`
			ReadOnly    bool     `json:"is_read_only"`
			CanCache    bool     `json:"can_cache"`
			CanDF       bool     `json:"can_df"`
			CanFastZero bool     `json:"can_fast_zero"`
			CanFlush    bool     `json:"can_flush"`
			CanFUA      bool     `json:"can_fua"`
			CanMulti    bool     `json:"can_multi_conn"`
			CanTrim     bool     `json:"can_trim"`
			CanZero     bool     `json:"can_zero"`
			BlockMin    int      `json:"block_size_minimum"`
			BlockPref   int      `json:"block_size_preferred"`
			BlockMax    int      `json:"block_size_maximum"`
			Size        int64    `json:"export-size"`
		} `json:"exports"`
	}
	out := run(t, "nbdinfo", "--json", ts.uri("disk"))
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := info.Exports[0]
	if e.Size != 64*mib || e.ReadOnly || !e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || !e.CanFastZero ||
		!e.CanMulti || !e.CanCache || !e.CanDF || e.Description != "a test disk" ||
		e.BlockMin != 1 || e.BlockPref != 65536 || e.BlockMax != 32*mib ||
		len(e.Contexts) != 1 || e.Contexts[0] != "base:allocation" {
		t.Fatalf("nbdinfo export: %+v\n%s", e, out)
	}
	if got := strings.TrimSpace(run(t, "nbdinfo", "--size", ts.uri("disk"))); got != fmt.Sprint(64*mib) {
		t.Fatalf("nbdinfo --size = %q", got)
	}
	if _, err := runErr(t, "nbdinfo", "--is", "read-only", ts.uri("ro")); err != nil {
		t.Fatalf("nbdinfo --is read-only on ro: %v", err)
	}
	if _, err := runErr(t, "nbdinfo", "--can", "multi-conn", ts.uri("ro")); err == nil {
		t.Fatal("ro export claims multi-conn")
	}
	if out, err := runErr(t, "nbdinfo", ts.uri("nonexistent")); err == nil {
		t.Fatalf("nbdinfo on a missing export succeeded: %s", out)
	}

	// Data at 1 MiB and at the very end; the map shows it and the holes.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 128k", "-c", fmt.Sprintf("write -P 0x7e %d 4k", 64*mib-4096), ts.uri("disk"))
	var extents []struct {
		Offset int64  `json:"offset"`
		Length int64  `json:"length"`
		Type   int    `json:"type"`
		Desc   string `json:"description"`
	}
	out = run(t, "nbdinfo", "--map", "--json", ts.uri("disk"))
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	type ext struct {
		off, len int64
		typ      int
	}
	var got []ext
	for _, x := range extents {
		got = append(got, ext{x.Offset, x.Length, x.Type})
	}
	// memexport allocates 32 KiB pages: the 4 KiB at the end is one page.
	want := []ext{{0, mib, 3}, {mib, 128 << 10, 0}, {mib + 128<<10, 63*mib - 128<<10 - 32<<10, 3}, {64*mib - 32<<10, 32 << 10, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("map %v, want %v\n%s", got, want, out)
	}
	totals := run(t, "nbdinfo", "--map", "--totals", ts.uri("disk"))
	if !strings.Contains(totals, "hole,zero") || !strings.Contains(totals, "data") {
		t.Fatalf("nbdinfo --map --totals:\n%s", totals)
	}
	if mem.Allocated() == 0 {
		t.Fatal("writes did not reach the export")
	}
}

func TestNbdinfoList(t *testing.T) {
	requireBin(t, "nbdinfo")
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "alpha", mib, nbd.ExportInfo{Description: "first disk"})
	ts.addMem(t, "beta", 2*mib, nbd.ExportInfo{ReadOnly: true})
	var list struct {
		Exports []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
			Size        int64  `json:"export-size"`
			ReadOnly    bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	out := run(t, "nbdinfo", "--list", "--json", ts.uri(""))
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(list.Exports) != 2 || list.Exports[0].Name != "alpha" || list.Exports[0].Description != "first disk" ||
		list.Exports[0].Size != mib || list.Exports[1].Name != "beta" || !list.Exports[1].ReadOnly || list.Exports[1].Size != 2*mib {
		t.Fatalf("nbdinfo --list: %+v\n%s", list, out)
	}
}

// writeImage writes a file of size bytes: random data with zero runs.
func writeImage(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, mib)
	for off := int64(0); off < size; off += mib {
		switch (off / mib) % 4 {
		case 1:
			continue // leave a hole
		case 2:
			clear(buf)
			rand.Read(buf[:100<<10]) // mostly zero, partly data
		default:
			rand.Read(buf)
		}
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
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
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestQemuImg(t *testing.T) {
	requireBin(t, "qemu-img")
	ts := startServer(t, nbd.Config{})
	const size = 96 * mib
	ts.addMem(t, "disk", size, nbd.ExportInfo{MultiConn: true})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeImage(t, src, size)

	out := run(t, "qemu-img", "info", "--output=json", ts.uri("disk"))
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != size || info.Format != "raw" {
		t.Fatalf("qemu-img info: %+v %v\n%s", info, err, out)
	}
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, ts.uri("disk"))
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.uri("disk"))
	back := filepath.Join(dir, "back.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri("disk"), back)
	if fileHash(t, src) != fileHash(t, back) {
		t.Fatal("qemu-img convert round trip differs")
	}
	// A changed byte is noticed.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x01 5M 1", ts.uri("disk"))
	if out, err := runErr(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.uri("disk")); err == nil {
		t.Fatalf("qemu-img compare missed a difference:\n%s", out)
	}
}

func TestQemuIO(t *testing.T) {
	requireBin(t, "qemu-io")
	ts := startServer(t, nbd.Config{})
	const size = 32 * mib
	ts.addMem(t, "disk", size, nbd.ExportInfo{})
	ts.addMem(t, "ro", size, nbd.ExportInfo{ReadOnly: true})
	u := ts.uri("disk")
	last := fmt.Sprint(size - 1)
	run(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0xab 0 1",
		"-c", "write -P 0xcd "+last+" 1",
		"-c", "write -P 0x11 4095 2",
		"-c", "write -z 8M 1M",
		"-c", "write -f -P 0x22 16M 64k", // FUA
		"-c", "discard 20M 1M",
		"-c", "flush", u)
	out := run(t, "qemu-io", "-f", "raw",
		"-c", "read -P 0xab 0 1",
		"-c", "read -P 0 1 4094",
		"-c", "read -P 0x11 4095 2",
		"-c", "read -P 0xcd "+last+" 1",
		"-c", "read -P 0 8M 1M",
		"-c", "read -P 0x22 16M 64k",
		"-c", "read -P 0 20M 1M", u)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io pattern check:\n%s", out)
	}
	// A pattern mismatch is reported (the check can fail).
	out, _ = runErr(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab "+last+" 1", u)
	if !strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io did not notice a wrong pattern:\n%s", out)
	}
	// Past the end and read-only are refused.
	out, _ = runErr(t, "qemu-io", "-f", "raw", "-c", "write -P 1 "+last+" 2", u)
	if !strings.Contains(out, "error") && !strings.Contains(out, "Input/output") && !strings.Contains(out, "failed") {
		t.Fatalf("write past the end accepted:\n%s", out)
	}
	out, _ = runErr(t, "qemu-io", "-f", "raw", "-c", "write -P 1 0 512", ts.uri("ro"))
	// qemu sees NBD_FLAG_READ_ONLY and refuses to open read-write.
	if !strings.Contains(out, "Permission denied") {
		t.Fatalf("write to read-only export accepted:\n%s", out)
	}
}

func TestNbdcopy(t *testing.T) {
	requireBin(t, "nbdcopy")
	size := int64(512 * mib)
	if testing.Short() {
		size = 64 * mib
	}
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "disk", size, nbd.ExportInfo{MultiConn: true})
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	dst := filepath.Join(dir, "dst.raw")
	writeImage(t, src, size)
	run(t, "nbdcopy", "--flush", src, ts.uri("disk"))
	if got := ts.metric(t, "zos_nbd_connections_total"); got < 2 {
		t.Errorf("nbdcopy used %v connections; multi-conn not used", got)
	}
	run(t, "nbdcopy", ts.uri("disk"), dst)
	if fileHash(t, src) != fileHash(t, dst) {
		t.Fatal("nbdcopy in and out: files differ")
	}
	if got := ts.metric(t, "zos_nbd_read_bytes_total"); got == 0 {
		t.Error("read bytes metric not counted")
	}
}

func TestFioVerify(t *testing.T) {
	requireBin(t, "fio")
	ts := startServer(t, nbd.Config{})
	ts.addMem(t, "disk", 256*mib, nbd.ExportInfo{MultiConn: true})
	common := []string{"--name=verify", "--ioengine=nbd", "--uri=" + ts.uri("disk"),
		"--rw=randwrite", "--bs=4k", "--size=128M", "--iodepth=32", "--verify=crc32c",
		"--randseed=1234", "--output-format=json", "--verify_state_save=0"}
	// Write everything with checksummed blocks (no verify pass here)...
	run(t, "fio", append(common, "--do_verify=0")...)
	// ...then a separate process reads it all back and checks.
	out := run(t, "fio", append(common, "--verify_only")...)
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
	// The verify can fail: corrupt one block and run it again.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 128M", ts.uri("disk"))
	if out, err := runErr(t, "fio", append(common, "--verify_only")...); err == nil {
		t.Fatalf("fio verify passed on overwritten data:\n%s", out)
	}
}

func TestTLSClients(t *testing.T) {
	requireBin(t, "nbdinfo", "qemu-img", "nbdcopy")
	pki := newTestPKI(t, true)
	ts := startServer(t, nbd.Config{TLS: pki.serverTLS, RequireTLS: true})
	ts.addMem(t, "secure", 16*mib, nbd.ExportInfo{MultiConn: true})
	tlsURI := "nbds://" + ts.addr + "/secure?tls-certificates=" + pki.dir

	out := run(t, "nbdinfo", "--json", tlsURI)
	if !strings.Contains(out, `"TLS": true`) || !strings.Contains(out, `"export-size": 16777216`) {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	// A plain client is refused with a message saying TLS is required.
	if out, err := runErr(t, "nbdinfo", ts.uri("secure")); err == nil || !strings.Contains(strings.ToLower(out), "tls") {
		t.Fatalf("plain nbdinfo against a TLS-only server: err=%v\n%s", err, out)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	back := filepath.Join(dir, "back.raw")
	writeImage(t, src, 16*mib)
	run(t, "nbdcopy", src, tlsURI)

	// qemu's own TLS client with x509 credentials.
	obj := "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.dir
	host, port, _ := strings.Cut(ts.addr, ":")
	img := fmt.Sprintf("driver=nbd,host=%s,port=%s,export=secure,tls-creds=tls0", host, port)
	out = run(t, "qemu-img", "info", "--object", obj, "--image-opts", img)
	if !strings.Contains(out, "16 MiB") {
		t.Fatalf("qemu-img info over TLS:\n%s", out)
	}
	run(t, "qemu-img", "convert", "--object", obj, "--image-opts", img, "-O", "raw", back)
	if fileHash(t, src) != fileHash(t, back) {
		t.Fatal("TLS copy in (nbdcopy) and out (qemu-img) differ")
	}
}

// The server serves any net.Listener: a unix socket for local qemu.
func TestUnixSocket(t *testing.T) {
	requireBin(t, "nbdinfo")
	exports := nbd.NewStaticExports()
	exports.Add(mustMem(3*mib), nbd.ExportInfo{Name: "local"})
	srv, err := nbd.New(nbd.Config{Exports: exports})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	out := run(t, "nbdinfo", "--size", "nbd+unix:///local?socket="+sock)
	if strings.TrimSpace(out) != fmt.Sprint(3*mib) {
		t.Fatalf("nbdinfo over unix socket: %q", out)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nbd.ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
}
