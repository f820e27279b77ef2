package node

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// keyed is a transport that sends every request with an Idempotency-Key.
type keyed struct {
	key string
	rt  http.RoundTripper
}

func (k *keyed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Idempotency-Key", k.key)
	return k.rt.RoundTrip(r)
}

// TestHubIdempotencyKey: on a real node the hub's writes take an
// Idempotency-Key like the rest of the API: an flist upload or a delete
// retried with the same key by the same token gets the first answer (a
// delete retried is not a 404), the same key for another request is
// refused with 422, and a malformed key is a 400 in the hub's envelope
// before anything is done.
func TestHubIdempotencyKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 1, BaseIP: randomBase(t), DisableTLS: true}) // idempotency, not TLS
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := "http://" + d.Nodes[0].APIAddr()
	tok, err := client.New(addr, d.Token).CreateToken(ctx, "alice", fsm.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	withKey := func(key string) *hub.Client {
		c := hub.NewClient(addr, tok.Token)
		c.HTTP = &http.Client{Transport: &keyed{key: key, rt: tr}}
		return c
	}
	plain := hub.NewClient(addr, tok.Token)
	plain.HTTP = &http.Client{Transport: tr}

	// An flist whose chunks are pushed to the cluster.
	local := mem.New()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	body := strings.Repeat("zos", 100<<10)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1600000000, 0)})
	tw.Write([]byte(body))
	tw.Close()
	tree, err := flist.BuildTar(ctx, &tb, &flist.Options{Store: local})
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := tree.Write(&file); err != nil {
		t.Fatal(err)
	}
	fr, err := flist.Open(ctx, bytes.NewReader(file.Bytes()), int64(file.Len()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	if _, _, err := plain.Push(ctx, fr, local, 2, nil); err != nil {
		t.Fatal(err)
	}

	up := withKey("upload-1")
	first, err := up.UploadFlist(ctx, "", "one", file.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	again, err := up.UploadFlist(ctx, "", "one", file.Bytes())
	if err != nil || again.Entry.Ref != first.Entry.Ref || !again.Entry.Created.Equal(first.Entry.Created) {
		t.Fatalf("upload retried with its key: %+v %v, first %+v", again, err, first)
	}
	// The same key for another request: 422, nothing done.
	if _, err := up.UploadFlist(ctx, "", "two", file.Bytes()); err == nil || !strings.Contains(err.Error(), "HTTP 422") {
		t.Fatalf("a key reused for another upload: %v, want 422", err)
	}
	if _, err := plain.Inspect(ctx, "alice", "two"); err == nil {
		t.Fatal("the refused upload registered alice/two")
	}

	// A delete retried with its key answers as the first did; without
	// one the second delete is a 404.
	del := withKey("delete-1")
	for i := range 3 {
		if err := del.Delete(ctx, "alice", "one"); err != nil {
			t.Fatalf("delete %d with its key: %v", i+1, err)
		}
	}
	if _, err := plain.Inspect(ctx, "alice", "one"); err == nil {
		t.Fatal("alice/one still registered")
	}
	if err := plain.Delete(ctx, "alice", "one"); err == nil {
		t.Fatal("a second delete without a key succeeded, want 404")
	}

	if err := withKey("delete-2").Delete(ctx, "alice", "never"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("a keyed delete of an flist that never was: %v, want 404", err)
	}

	// An archive upload builds its flist anew each time (a new creation
	// time): retried with its key it is refused with 422, which says the
	// first one reached the cluster; the first flist stays registered.
	var ab bytes.Buffer
	aw := tar.NewWriter(&ab)
	aw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, ModTime: time.Unix(1600000000, 0)})
	aw.Write([]byte("abc"))
	aw.Close()
	arch := withKey("archive-1")
	a1, err := arch.UploadArchive(ctx, "", "arch", "a.tar", bytes.NewReader(ab.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := arch.UploadArchive(ctx, "", "arch", "a.tar", bytes.NewReader(ab.Bytes())); err == nil || !strings.Contains(err.Error(), "HTTP 422") {
		t.Fatalf("archive upload retried with its key: %v, want 422", err)
	}
	if in, err := plain.Inspect(ctx, "alice", "arch"); err != nil || in.Entry.Ref != a1.Entry.Ref {
		t.Fatalf("after the refused retry: %+v %v, want the first upload's %s", in.Entry, err, a1.Entry.Ref)
	}

	// Malformed keys: 400 in the hub's envelope, before anything is done;
	// without a token the hub's 401 comes first.
	for _, key := range []string{"has space", strings.Repeat("k", 256)} {
		if _, err := withKey(key).UploadFlist(ctx, "", "three", file.Bytes()); err == nil || !strings.Contains(err.Error(), "Idempotency-Key must be") || !strings.Contains(err.Error(), "HTTP 400") {
			t.Errorf("key %.10q: %v, want a 400 saying what a key is", key, err)
		}
	}
	if _, err := plain.Inspect(ctx, "alice", "three"); err == nil {
		t.Fatal("an upload with a malformed key registered alice/three")
	}
	anon := hub.NewClient(addr, "")
	anon.HTTP = &http.Client{Transport: &keyed{key: "has space", rt: tr}}
	if err := anon.Delete(ctx, "alice", "x"); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("no token, malformed key: %v, want 401", err)
	}
}
