package container_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/node/container"
)

// An flist's meta image object (flist.ImageConfig) decodes into
// container.Image: what the agent hands over for a root built from an OCI image.
func TestImageFromFlist(t *testing.T) {
	in := flist.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"},
		Env: []string{"A=1"}, WorkingDir: "/w", User: "1:2", Labels: map[string]string{"x": "y"}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var img container.Image
	if err := json.Unmarshal(b, &img); err != nil {
		t.Fatal(err)
	}
	want := container.Image{Entrypoint: in.Entrypoint, Cmd: in.Cmd, Env: in.Env, WorkingDir: in.WorkingDir, User: in.User}
	if !reflect.DeepEqual(img, want) {
		t.Fatalf("got %+v, want %+v", img, want)
	}
}
