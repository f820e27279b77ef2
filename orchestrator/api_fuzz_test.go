package orchestrator

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

var (
	fuzzOnce sync.Once
	fuzzSrv  *Server
	fuzzErr  error
	// fuzzDown closes what fuzzServer opened (TestMain, after the tests).
	fuzzDown = func() {}
)

const fuzzToken = "zos_fuzz_admin_token"

// fuzzServer is one bootstrapped single-node control plane behind the API.
func fuzzServer(tb testing.TB) *Server {
	fuzzOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			fuzzErr = err
			return
		}
		_, tr := hraft.NewInmemTransport("n1")
		rs, err := raft.Open(raft.Config{ID: "n1", Dir: dir, Transport: tr, Bootstrap: true,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond})
		if err != nil {
			fuzzErr = err
			return
		}
		fuzzDown = func() {
			rs.Close()
			os.RemoveAll(dir)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if fuzzErr = rs.WaitLeader(ctx); fuzzErr != nil {
			return
		}
		if _, fuzzErr = rs.Apply(ctx, fsm.OpInit, fsm.InitArgs{ClusterID: "fuzz", Secret: "fuzz-secret-0123456789",
			Admin: fsm.Token{ID: "admin", Name: "admin", Hash: HashToken(fuzzToken)}}); fuzzErr != nil {
			return
		}
		if _, fuzzErr = rs.Apply(ctx, fsm.OpNodeAdd, fsm.NodeAddArgs{Node: fsm.Node{ID: "n1", Addr: "127.0.0.1", RaftAddr: "n1", APIAddr: "127.0.0.1:1"}}); fuzzErr != nil {
			return
		}
		fuzzSrv, fuzzErr = New(Config{Raft: rs, NodeID: "n1"})
	})
	if fuzzErr != nil {
		tb.Fatal(fuzzErr)
	}
	return fuzzSrv
}

var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/api/v1/nodes/join"},
	{"POST", "/api/v1/tokens"},
	{"POST", "/api/v1/pools"},
	{"PUT", "/api/v1/kv/ns/key"},
	{"POST", "/api/v1/nodes/n1/promote"},
	{"DELETE", "/api/v1/pools/x"},
}

// FuzzAPIBodies sends arbitrary bodies to the write routes: the answer is
// never a 5xx or a panic, and the API keeps serving.
func FuzzAPIBodies(f *testing.F) {
	f.Add(uint8(0), []byte(`{"node":{"id":"x","addr":"a","raft_addr":"b","api_addr":"c"}}`))
	f.Add(uint8(1), []byte(`{"name":"bob","role":"user"}`))
	f.Add(uint8(2), []byte(`{"name":"p","k":1,"m":0}`))
	f.Add(uint8(2), []byte(`{"name":"p","k":-4,"m":99}`))
	f.Add(uint8(3), []byte("value"))
	f.Add(uint8(0), []byte(`{"node":{}} trailing`))
	f.Add(uint8(1), []byte{0xff, 0xfe, '{'})
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		s := fuzzServer(t)
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s with %q: %d %s", rt.method, rt.path, body, w.Code, w.Body.String())
		}
		// Still serving.
		req = httptest.NewRequest("GET", "/api/v1/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		w = httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		if w.Code != 200 {
			t.Fatalf("API broken after %q: %d %s", body, w.Code, w.Body.String())
		}
	})
}
