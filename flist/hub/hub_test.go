package hub

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
	"github.com/zosproject/zos/flist/internal/memstore"
	"github.com/zosproject/zos/internal/testimage"
)

type testHub struct {
	store *memstore.Store
	reg   *MemRegistry
	srv   *httptest.Server
	alice *Client
	bob   *Client
	admin *Client
	anon  *Client
}

func newTestHub(t testing.TB) *testHub {
	store := memstore.New()
	reg := NewMemRegistry()
	tokens := map[string]Identity{"alice-token": {User: "alice"}, "bob-token": {User: "bob"}, "admin-token": {User: "root", Admin: true}}
	h := New(Config{Store: store, Registry: reg, TempDir: t.TempDir(), Authenticate: func(r *http.Request) (Identity, error) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		id, ok := tokens[tok]
		if !ok {
			return Identity{}, errors.New("bad token")
		}
		return id, nil
	}})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {}) // the lead's routes coexist
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {})
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testHub{store: store, reg: reg, srv: srv,
		alice: NewClient(srv.URL, "alice-token"), bob: NewClient(srv.URL, "bob-token"),
		admin: NewClient(srv.URL, "admin-token"), anon: NewClient(srv.URL, "")}
}

type ent struct {
	name, body, link string
	typ              byte
}

func tarGz(t testing.TB, ents ...ent) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, ModTime: time.Unix(1600000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if h.Typeflag == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestHubFlow(t *testing.T) {
	th := newTestHub(t)
	ctx := context.Background()
	a := tarGz(t, ent{name: "etc/hostname", body: "a\n"}, ent{name: "bin/tool", body: strings.Repeat("tool", 1000)}, ent{name: "shared", body: "from a"})
	b := tarGz(t, ent{name: "etc/other", body: "b\n"}, ent{name: "shared", body: "from b"})

	res, err := th.alice.UploadArchive(ctx, "", "", "first.tar.gz", bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if res.Flist != "alice/first.flist" || res.Stats.Files != 3 || res.Kind != flist.KindTar {
		t.Fatalf("upload result %+v", res)
	}
	// Raw body upload, as `curl --data-binary @b.tar.gz`.
	req, _ := http.NewRequest(http.MethodPost, th.srv.URL+"/api/flist/me/upload?name=second", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer alice-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("raw upload: %v %v", resp.Status, err)
	}
	resp.Body.Close()

	repos, err := th.anon.ListRepos(ctx)
	if err != nil || fmt.Sprint(repos) != "[alice]" {
		t.Fatalf("repos %v %v", repos, err)
	}
	list, err := th.anon.List(ctx, "alice")
	if err != nil || len(list) != 2 || list[0].Name != "first" || list[1].Name != "second" || list[0].Owner != "alice" {
		t.Fatalf("list %+v %v", list, err)
	}
	ins, err := th.anon.Inspect(ctx, "alice", "first.flist")
	if err != nil || ins.Meta.Stats.Files != 3 || ins.Ref != list[0].Ref {
		t.Fatalf("inspect %+v %v", ins, err)
	}
	// Download and read it.
	fr, err := th.anon.Open(ctx, "alice/first.flist")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := fr.Cat(ctx, th.anon, "/etc/hostname", &out); err != nil || out.String() != "a\n" {
		t.Fatalf("cat via hub: %q %v", out.String(), err)
	}
	fr.Close()
	// Range requests work on the .flist file.
	req, _ = http.NewRequest(http.MethodGet, th.srv.URL+"/alice/first.flist", nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("range: %v %v", resp.Status, err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	full, _ := th.anon.Download(ctx, th.srv.URL+"/alice/first.flist")
	if !bytes.Equal(part, full[10:20]) {
		t.Fatal("range content differs")
	}

	// Merge: first wins.
	m, err := th.alice.Merge(ctx, "", "merged", []string{"alice/first.flist", "alice/second.flist"})
	if err != nil || m.Stats.Files != 4 {
		t.Fatalf("merge %+v %v", m, err)
	}
	mr, err := th.anon.Open(ctx, "alice/merged")
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	mr.Cat(ctx, th.anon, "shared", &out)
	if out.String() != "from a" {
		t.Fatalf("merged shared = %q", out.String())
	}
	mr.Close()

	// Permissions.
	if _, err := th.anon.UploadArchive(ctx, "", "x", "x.tar.gz", bytes.NewReader(a)); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("anonymous upload: %v", err)
	}
	if err := th.bob.Delete(ctx, "alice", "first"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("bob deletes alice's flist: %v", err)
	}
	if _, err := th.bob.UploadArchive(ctx, "alice", "x", "x.tar.gz", bytes.NewReader(a)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("bob uploads into alice: %v", err)
	}
	dev := tarGz(t, ent{name: "dev/null", typ: tar.TypeChar})
	if _, err := th.alice.UploadArchive(ctx, "", "dev", "dev.tar.gz", bytes.NewReader(dev)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("device upload by a user: %v", err)
	}
	if _, err := th.admin.UploadArchive(ctx, "alice", "dev", "dev.tar.gz", bytes.NewReader(dev)); err != nil {
		t.Fatalf("device upload by admin: %v", err)
	}
	evil := tarGz(t, ent{name: "../../etc/passwd", body: "x"})
	if _, err := th.alice.UploadArchive(ctx, "", "evil", "evil.tar.gz", bytes.NewReader(evil)); err == nil || !strings.Contains(err.Error(), "unsafe path") {
		t.Fatalf("malicious upload: %v", err)
	}
	if _, err := th.alice.UploadArchive(ctx, "", "trunc", "t.tar.gz", bytes.NewReader(a[:len(a)/2])); err == nil {
		t.Fatal("truncated upload accepted")
	}

	// Delete.
	if err := th.alice.Delete(ctx, "", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := th.anon.Inspect(ctx, "alice", "first"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := th.anon.Download(ctx, "alice/first.flist"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("download after delete: %v", err)
	}
}

func TestHubImageUpload(t *testing.T) {
	th := newTestHub(t)
	layer := func(ents ...ent) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range ents {
			tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(e.body))})
			tw.Write([]byte(e.body))
		}
		tw.Close()
		return buf.Bytes()
	}
	cfg := testimage.Config{Entrypoint: []string{"/app"}, Env: []string{"X=1"}, WorkingDir: "/w"}
	arch, err := testimage.DockerSave(cfg, [][]byte{layer(ent{name: "app", body: "v1"}, ent{name: "old", body: "x"}), layer(ent{name: "app", body: "v2"}, ent{name: ".wh.old"})}, "img:1")
	if err != nil {
		t.Fatal(err)
	}
	res, err := th.alice.UploadArchive(context.Background(), "", "img", "img.tar", bytes.NewReader(arch))
	if err != nil || res.Kind != flist.KindDockerSave || res.Stats.Files != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	ins, err := th.anon.Inspect(context.Background(), "alice", "img")
	if err != nil || ins.Meta.Image == nil || ins.Meta.Image.Entrypoint[0] != "/app" || ins.Meta.Image.WorkingDir != "/w" {
		t.Fatalf("%+v %v", ins.Meta.Image, err)
	}
}

func TestChunkEndpoints(t *testing.T) {
	th := newTestHub(t)
	ctx := context.Background()
	data := []byte("some chunk")
	if _, err := th.anon.Put(ctx, data); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("anonymous put: %v", err)
	}
	ref, err := th.alice.Put(ctx, data)
	if err != nil || ref != chunkstore.Sum(data) {
		t.Fatal(ref, err)
	}
	got, err := th.anon.Fetch(ctx, ref)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatal(err)
	}
	info, err := th.anon.Stat(ctx, ref)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatal(info, err)
	}
	other := chunkstore.Sum([]byte("absent"))
	if _, err := th.anon.Fetch(ctx, other); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := th.anon.Stat(ctx, other); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatal(err)
	}
	missing, err := th.anon.Missing(ctx, []chunkstore.Ref{ref, other})
	if err != nil || len(missing) != 1 || missing[0] != other {
		t.Fatal(missing, err)
	}
	// A body that does not match its declared ref is refused.
	req, _ := http.NewRequest(http.MethodPost, th.srv.URL+"/api/v1/chunks", strings.NewReader("tampered"))
	req.Header.Set("Authorization", "Bearer alice-token")
	req.Header.Set("X-Zos-Ref", ref.String())
	resp, _ := http.DefaultClient.Do(req)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("tampered chunk: %s", resp.Status)
	}
	resp.Body.Close()
	big := make([]byte, chunkstore.MaxChunkSize+1)
	req, _ = http.NewRequest(http.MethodPost, th.srv.URL+"/api/v1/chunks", bytes.NewReader(big))
	req.Header.Set("Authorization", "Bearer alice-token")
	resp, _ = http.DefaultClient.Do(req)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized chunk: %s", resp.Status)
	}
	resp.Body.Close()
	resp, _ = http.Get(th.srv.URL + "/api/v1/chunks/nothex")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad ref: %s", resp.Status)
	}
	resp.Body.Close()
	// A hub that went away is a transient error.
	dead := NewClient("http://127.0.0.1:1", "")
	if _, err := dead.Fetch(ctx, ref); !chunkstore.IsTransient(err) {
		t.Fatalf("dead hub: %v", err)
	}
}

func TestPushAndUploadFlist(t *testing.T) {
	th := newTestHub(t)
	ctx := context.Background()
	local := memstore.New()
	tr, err := flist.BuildTar(ctx, bytes.NewReader(tarGz(t, ent{name: "a", body: strings.Repeat("A", 3<<20)}, ent{name: "b", body: "bee"})), &flist.Options{Store: local})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	// Chunks not pushed yet: refused.
	if _, err := th.alice.UploadFlist(ctx, "", "pushed", buf.Bytes()); err == nil || !strings.Contains(err.Error(), "not in the store") {
		t.Fatalf("upload-flist before push: %v", err)
	}
	fr, err := flist.Open(ctx, bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	n, _, err := th.alice.Push(ctx, fr, local, 4, nil)
	if err != nil || n == 0 {
		t.Fatal(n, err)
	}
	if n2, _, err := th.alice.Push(ctx, fr, local, 4, nil); err != nil || n2 != 0 {
		t.Fatalf("second push sent %d chunks: %v", n2, err)
	}
	res, err := th.alice.UploadFlist(ctx, "", "pushed", buf.Bytes())
	if err != nil || res.Flist != "alice/pushed.flist" {
		t.Fatal(res, err)
	}
	// Garbage is refused.
	if _, err := th.alice.UploadFlist(ctx, "", "junk", []byte("not an flist at all, sorry........................................")); err == nil {
		t.Fatal("junk flist accepted")
	}
}

// TestMountOverHTTP mounts an flist on a "machine outside the cluster":
// everything (flist file and chunks) comes through the hub's HTTP API.
func TestMountOverHTTP(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Fatalf("busybox not installed (scripts/deps.sh test): %v", err)
	}
	th := newTestHub(t)
	ctx := context.Background()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	bb, _ := os.ReadFile("/bin/busybox")
	os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755)
	os.Symlink("busybox", filepath.Join(root, "bin/sh"))
	os.WriteFile(filepath.Join(root, "hello"), []byte("over http\n"), 0o644)
	tarball, err := exec.Command("tar", "-czf", "-", "-C", root, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := th.alice.UploadArchive(ctx, "", "bb", "bb.tar.gz", bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	base, p, err := SplitURL(th.srv.URL + "/alice/bb.flist")
	if err != nil {
		t.Fatal(err)
	}
	client := NewClient(base, "")
	fr, err := client.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fetches := th.store.Fetches.Load()
	m, err := ffuse.Mount(ffuse.Config{Mountpoint: filepath.Join(t.TempDir(), "mnt"), Flist: fr, Store: client, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount(context.Background())
	got, err := os.ReadFile(filepath.Join(m.Dir(), "hello"))
	if err != nil || string(got) != "over http\n" {
		t.Fatalf("read: %q %v", got, err)
	}
	out, err := exec.Command("chroot", m.Dir(), "/bin/sh", "-c", "echo hi").CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("chroot over http: %q %v", out, err)
	}
	if th.store.Fetches.Load() == fetches {
		t.Fatal("no chunk fetched through the hub")
	}
}

// TestCoexistsWithOtherRoutes: the node's other routes (prefix patterns, a
// catch-all UI) register on the same mux without conflicts.
func TestCoexistsWithOtherRoutes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ui") })
	mux.HandleFunc("GET /debug/pprof/", func(w http.ResponseWriter, r *http.Request) {})
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "index") })
	mux.Handle("GET /", ui)
	mux.HandleFunc("GET /api/v1/vdisks/{name}", func(w http.ResponseWriter, r *http.Request) {})
	New(Config{Store: memstore.New(), Registry: NewMemRegistry(), Fallback: ui}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]string{"/ui/x/y": "ui", "/assets/app.js": "index", "/": "index", "/a/b/c": "index"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("%s: %q, want %q", path, body, want)
		}
	}
	resp, _ := http.Get(srv.URL + "/nobody/none.flist")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing flist: %s", resp.Status)
	}
	resp.Body.Close()
}
