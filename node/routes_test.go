package node

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/internal/route"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// access is who may call a route.
type access int

const (
	open  access = iota // anyone, no token
	user                // any valid token (user or admin)
	admin               // an admin token
	nodes               // the cluster secret only
)

// routeAccess is the authentication of every route of a node's API. A
// route declared in orchestrator/api, blockd/vdiskapi or flist/hub that
// is missing here fails TestRouteAuth: say who may call it.
var routeAccess = map[route.Route]access{
	api.Healthz: open, api.Readyz: open, api.Metrics: user,

	api.GetCluster: user, api.ListNodes: user, api.GetNode: user,
	api.JoinNode: admin, api.RemoveNode: admin, api.PromoteNode: admin, api.DemoteNode: admin,
	api.ListTokens: admin, api.CreateToken: admin, api.DeleteToken: admin,
	api.ListPools: user, api.CreatePool: admin, api.DeletePool: admin,
	api.ListKV: admin, api.GetKV: admin, api.PutKV: admin, api.DeleteKV: admin,

	api.PutBlob: user, api.GetBlob: user, api.StatBlob: user, api.StatChunk: user, api.GetStoreStatus: user,
	api.Scrub: user, api.GC: user, api.ListPins: user, api.Unpin: user,

	api.Forward: nodes, api.LocalStore: nodes, api.LocalScrub: nodes, api.LocalHeal: nodes, api.SyncVDisk: nodes,

	vdiskapi.List: user, vdiskapi.Create: user, vdiskapi.Get: user, vdiskapi.Delete: user, vdiskapi.Resize: user,
	vdiskapi.ListSnapshots: user, vdiskapi.Snapshot: user, vdiskapi.DeleteSnapshot: user, vdiskapi.Rollback: user,
	vdiskapi.Clone: user, vdiskapi.Export: user, vdiskapi.Import: user, vdiskapi.Diff: user,

	hub.ListReposRoute: open, hub.ListRoute: open, hub.InspectRoute: open, hub.DownloadRoute: open,
	hub.GetChunkRoute: open, hub.MissingChunkRoute: open,
	hub.DeleteRoute: user, hub.DeleteMineRoute: user, hub.UploadRoute: user, hub.UploadFlistRoute: user,
	hub.MergeRoute: user, hub.PutChunkRoute: user,
}

// TestRouteAuth checks every route's authentication on a real node: no
// token is 401 unless the route is open, a user token on an admin or
// node route is 403 (an admin token on a node route too), and open and
// user routes let a user through (whatever the handler then answers).
func TestRouteAuth(t *testing.T) {
	var all []route.Route
	all = append(all, api.Routes...)
	all = append(all, vdiskapi.Routes...)
	all = append(all, hub.Routes...)
	seen := map[route.Route]bool{}
	for _, rt := range all {
		if seen[rt] {
			t.Errorf("route %s is declared twice", rt)
		}
		seen[rt] = true
		if _, ok := routeAccess[rt]; !ok {
			t.Errorf("route %s has no entry in routeAccess: say who may call it", rt)
		}
	}
	for rt := range routeAccess {
		if !seen[rt] {
			t.Errorf("routeAccess lists %s, which no API package declares", rt)
		}
	}
	if t.Failed() {
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 1, BaseIP: randomBase(t), DisableTLS: true}) // the route matrix, not TLS
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := "http://" + d.Nodes[0].APIAddr()
	tok, err := client.New(addr, d.Token).CreateToken(ctx, "alice", fsm.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	status := func(rt route.Route, token string) int {
		t.Helper()
		var args []string
		for range strings.Count(rt.Path, "{") {
			args = append(args, "x")
		}
		req, err := http.NewRequestWithContext(ctx, rt.Method, addr+rt.URL(args...), strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", rt, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, rt := range all {
		want := routeAccess[rt]
		none := status(rt, "")
		switch {
		case want == open && (none == http.StatusUnauthorized || none == http.StatusForbidden):
			t.Errorf("%s is open but answers %d without a token", rt, none)
		case want != open && none != http.StatusUnauthorized:
			t.Errorf("%s without a token: %d, want 401", rt, none)
		}
		if st := status(rt, "zos_bad_token"); want != open && st != http.StatusUnauthorized {
			t.Errorf("%s with an invalid token: %d, want 401", rt, st)
		}
		user := status(rt, tok.Token)
		switch want {
		case admin, nodes:
			if user != http.StatusForbidden {
				t.Errorf("%s with a user token: %d, want 403", rt, user)
			}
		default:
			if user == http.StatusUnauthorized || user == http.StatusForbidden {
				t.Errorf("%s with a user token: %d, want it let through", rt, user)
			}
		}
		if want == nodes {
			if st := status(rt, d.Token); st != http.StatusForbidden {
				t.Errorf("%s (nodes only) with an admin token: %d, want 403", rt, st)
			}
		}
	}
	if st := status(api.Healthz, ""); st != http.StatusOK {
		t.Errorf("%s: %d, want 200", api.Healthz, st)
	}
}
