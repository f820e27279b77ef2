package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/raft"
)

// runVDisk runs `zos vdisk args…` and returns stdout.
func runVDisk(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newVDiskCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func mustVDisk(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runVDisk(t, args...)
	if err != nil {
		t.Fatalf("zos vdisk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestVDiskCLI(t *testing.T) {
	st := mem.New()
	svc, err := blockd.New(blockd.Config{Node: "n1", Control: raft.NewLocal("n1"), Logger: slogx.Discard,
		Registerer: prometheus.NewRegistry(), StoreFor: func(string, string) chunkstore.Store { return st }})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mux := http.NewServeMux()
	blockd.RegisterHTTP(mux, svc)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	t.Setenv("ZOS_ADDR", ts.URL)
	t.Setenv("ZOS_TOKEN", "")

	dir := t.TempDir()
	img := make([]byte, 5<<20+100)
	for i := range img[:3<<20] {
		img[i] = byte(rand.Uint32())
	}
	imgFile := filepath.Join(dir, "in.raw")
	os.WriteFile(imgFile, img, 0o644)

	mustVDisk(t, "create", "a", "--image", imgFile, "--block-size", "16K")
	mustVDisk(t, "create", "e", "--size", "10G", "--type", "cache")
	out := mustVDisk(t, "list", "-o", "json")
	var list []blockd.VDiskInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 || list[0].Size != 5<<20+512 || list[1].Size != 10<<30 {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out := mustVDisk(t, "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, "10.0 GiB") {
		t.Fatalf("table list:\n%s", out)
	}
	if out := mustVDisk(t, "info", "a"); !strings.Contains(out, "block size:  16.0 KiB") || !strings.Contains(out, "allocated:") {
		t.Fatalf("info:\n%s", out)
	}
	mustVDisk(t, "snapshot", "a", "s1")
	img2 := bytes.Clone(img)
	copy(img2[4<<20:], []byte("changed"))
	os.WriteFile(imgFile, img2, 0o644)
	mustVDisk(t, "import", "a", imgFile)
	mustVDisk(t, "snapshot", "a", "s2")
	if out := mustVDisk(t, "snapshots", "a"); !strings.Contains(out, "s1") || !strings.Contains(out, "s2") {
		t.Fatalf("snapshots:\n%s", out)
	}
	out = mustVDisk(t, "diff", "a@s1", "a@s2", "-o", "json")
	var d blockd.DiffAnswer
	if err := json.Unmarshal([]byte(out), &d); err != nil || len(d.Ranges) != 1 || d.Ranges[0].Offset != 4<<20 {
		t.Fatalf("diff: %v\n%s", err, out)
	}
	mustVDisk(t, "clone", "a@s1", "b")
	// Export is sparse and exact.
	exp := filepath.Join(dir, "out.raw")
	mustVDisk(t, "export", "b", "-o", exp)
	got, _ := os.ReadFile(exp)
	want := append(bytes.Clone(img), make([]byte, 412)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("export of the clone differs (%d bytes)", len(got))
	}
	var stt syscall.Stat_t
	syscall.Stat(exp, &stt)
	if stt.Blocks*512 >= int64(len(want)) {
		t.Fatalf("export is not sparse: %d bytes allocated", stt.Blocks*512)
	}
	mustVDisk(t, "export", "a@s2", "-o", exp)
	if got, _ := os.ReadFile(exp); !bytes.Equal(got[:len(img2)], img2) {
		t.Fatal("export of a snapshot differs")
	}
	mustVDisk(t, "rollback", "a", "s1")
	mustVDisk(t, "snapshot", "delete", "a", "s2")
	mustVDisk(t, "resize", "a", "8M")
	if _, err := runVDisk(t, "resize", "a", "1M"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("shrink without --force: %v", err)
	}
	mustVDisk(t, "resize", "a", "1M", "--force")
	if _, err := runVDisk(t, "info", "nope"); err == nil || !strings.Contains(err.Error(), "no vdisk") {
		t.Fatalf("info of a missing vdisk: %v", err)
	}
	mustVDisk(t, "delete", "b")
	mustVDisk(t, "create", "c", "--from", "a@s1", "--size", "64M")
	if out := mustVDisk(t, "info", "c"); !strings.Contains(out, "parent:      a@s1") || !strings.Contains(out, "64.0 MiB") {
		t.Fatalf("create --from:\n%s", out)
	}
}
