package blockd

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/zosproject/zos/orchestrator/client"
)

func TestHTTPAPI(t *testing.T) {
	e := newEnv()
	svc := e.service(t, "n1", nil)
	mux := http.NewServeMux()
	RegisterHTTP(mux, svc)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	c := client.New(ts.URL, "")
	ctx := context.Background()

	var info VDiskInfo
	if err := c.Do(ctx, "POST", "/api/v1/vdisks", map[string]any{"name": "h", "size": "8M", "block_size": 16384, "type": "db"}, &info); err != nil {
		t.Fatal(err)
	}
	if info.Size != 8<<20 || info.BlockSize != 16384 {
		t.Fatalf("created %+v", info)
	}
	// Errors carry the API codes.
	for _, tc := range []struct {
		method, path string
		body         any
		code         string
	}{
		{"POST", "/api/v1/vdisks", map[string]any{"name": "h", "size": 4096}, "exists"},
		{"POST", "/api/v1/vdisks", map[string]any{"name": "bad name", "size": 4096}, "invalid"},
		{"POST", "/api/v1/vdisks", map[string]any{"name": "x"}, "invalid"},
		{"POST", "/api/v1/vdisks", map[string]any{"name": "x", "size": "12Q"}, "invalid"},
		{"GET", "/api/v1/vdisks/nope", nil, "not_found"},
		{"POST", "/api/v1/vdisks/h/rollback", map[string]any{"snapshot": "nope"}, "not_found"},
		{"POST", "/api/v1/vdisks/h/resize", map[string]any{"size": 4096}, "invalid"},
		{"GET", "/api/v1/vdisks/h/diff?from=nope", nil, "not_found"},
	} {
		if err := c.Do(ctx, tc.method, tc.path, tc.body, nil); !client.IsCode(err, tc.code) {
			t.Errorf("%s %s: %v, want code %s", tc.method, tc.path, err, tc.code)
		}
	}

	// Import raw data, snapshot, change, export both.
	img := randImage(7, 8<<20, 3)
	if err := c.Do(ctx, "PUT", "/api/v1/vdisks/h/import", bytes.NewReader(img), &info); err != nil {
		t.Fatal(err)
	}
	if info.Allocated == 0 || info.Head == "" {
		t.Fatalf("after import %+v", info)
	}
	var sn SnapshotInfo
	if err := c.Do(ctx, "POST", "/api/v1/vdisks/h/snapshots", map[string]string{"name": "s1"}, &sn); err != nil || sn.Name != "s1" {
		t.Fatal(sn, err)
	}
	img2 := bytes.Clone(img)
	copy(img2[1<<20:], bytes.Repeat([]byte{1}, 5000))
	if err := c.Do(ctx, "PUT", "/api/v1/vdisks/h/import", bytes.NewReader(img2), nil); err != nil {
		t.Fatal(err)
	}
	export := func(q string) []byte {
		resp, err := c.Stream(ctx, "GET", "/api/v1/vdisks/h/export"+q, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ContentLength != 8<<20 {
			t.Fatalf("Content-Length %d", resp.ContentLength)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(export(""), img2) || !bytes.Equal(export("?snap=s1"), img) {
		t.Fatal("exports differ")
	}
	var diff DiffAnswer
	if err := c.Do(ctx, "GET", "/api/v1/vdisks/h/diff?from=s1", nil, &diff); err != nil {
		t.Fatal(err)
	}
	if len(diff.Ranges) != 1 || diff.Ranges[0].Offset != 1<<20 || diff.Ranges[0].Length != 16384 || diff.BlockSize != 16384 {
		t.Fatalf("diff %+v", diff)
	}
	if err := c.Do(ctx, "GET", "/api/v1/vdisks/h/diff?from=s1&to=s1", nil, &diff); err != nil || len(diff.Ranges) != 0 {
		t.Fatalf("empty diff %+v %v", diff, err)
	}
	// Clone, rollback, snapshots list/delete, resize, delete.
	if err := c.Do(ctx, "POST", "/api/v1/vdisks/h/clone", map[string]string{"snapshot": "s1", "name": "h2"}, &info); err != nil || info.Parent != "h@s1" {
		t.Fatal(info, err)
	}
	if err := c.Do(ctx, "POST", "/api/v1/vdisks/h/rollback", map[string]string{"snapshot": "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(export(""), img) {
		t.Fatal("rollback over HTTP did not restore")
	}
	var snaps []SnapshotInfo
	if err := c.Do(ctx, "GET", "/api/v1/vdisks/h/snapshots", nil, &snaps); err != nil || len(snaps) != 1 {
		t.Fatal(snaps, err)
	}
	if err := c.Do(ctx, "DELETE", "/api/v1/vdisks/h/snapshots/s1", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/api/v1/vdisks/h2/resize", map[string]any{"size": "16M"}, &info); err != nil || info.Size != 16<<20 {
		t.Fatal(info, err)
	}
	// Attached read-write: delete and rollback are refused with 423.
	_, rel, err := svc.Open(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "DELETE", "/api/v1/vdisks/h2", nil, nil); !client.IsCode(err, "busy") {
		t.Fatalf("delete attached: %v", err)
	}
	if err := c.Do(ctx, "PUT", "/api/v1/vdisks/h2/import", bytes.NewReader([]byte("x")), nil); !client.IsCode(err, "busy") {
		t.Fatalf("import attached: %v", err)
	}
	rel()
	if err := c.Do(ctx, "DELETE", "/api/v1/vdisks/h2", nil, nil); err != nil {
		t.Fatal(err)
	}
	// Create from a raw image upload (size from Content-Length).
	req, _ := http.NewRequest("POST", ts.URL+"/api/v1/vdisks?name=up&type=boot&block_size=4K", bytes.NewReader(img[:1000000]))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload create: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	var list []VDiskInfo
	if err := c.Do(ctx, "GET", "/api/v1/vdisks", nil, &list); err != nil || len(list) != 2 || list[1].Name != "up" || list[1].Size != 1000448 {
		t.Fatalf("list %+v %v", list, err)
	}
	resp, err = c.Stream(ctx, "GET", "/api/v1/vdisks/up/export", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(b[:1000000], img[:1000000]) || !isZero(b[1000000:]) || strconv.Itoa(len(b)) != "1000448" {
		t.Fatal("uploaded image differs")
	}
}
