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
	"github.com/zosproject/zos/orchestrator"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// access is who may call a route (internal/authz's scopes, as the test
// sees them).
type access int

const (
	open  access = iota // anyone, no token
	read                // any valid token (reader, operator, admin): scope Read
	data                // operator or admin, a reader GET only; names checked against prefixes: scope Data
	store               // data, but not a prefix-limited token: scope Store
	admin               // an admin token: scope Manage
	nodes               // the cluster secret only: scope Internal
)

// routeAccess is the authorization of every route of a node's API. A
// route declared in orchestrator/api, blockd/vdiskapi or flist/hub that
// is missing here fails TestRouteAuth: say who may call it.
var routeAccess = map[route.Route]access{
	api.Healthz: open, api.Readyz: open, api.Metrics: read,

	api.GetCluster: read, api.ListNodes: read, api.GetNode: read,
	api.JoinNode: admin, api.RemoveNode: admin, api.PromoteNode: admin, api.DemoteNode: admin,
	api.ListTokens: admin, api.CreateToken: admin, api.DeleteToken: admin,
	api.ListPools: read, api.CreatePool: admin, api.DeletePool: admin,
	api.ListKV: admin, api.GetKV: admin, api.PutKV: admin, api.DeleteKV: admin,

	api.PutBlob: data, api.GetBlob: data, api.StatBlob: data, api.StatChunk: data, api.GetStoreStatus: data,
	api.Scrub: store, api.GC: store, api.ListPins: data, api.Unpin: store,

	api.Forward: nodes, api.LocalStore: nodes, api.LocalScrub: nodes, api.LocalHeal: nodes, api.SyncVDisk: nodes,

	vdiskapi.List: data, vdiskapi.Create: data, vdiskapi.Get: data, vdiskapi.Delete: data, vdiskapi.Resize: data,
	vdiskapi.ListSnapshots: data, vdiskapi.Snapshot: data, vdiskapi.DeleteSnapshot: data, vdiskapi.Rollback: data,
	vdiskapi.Clone: data, vdiskapi.Export: data, vdiskapi.Import: data, vdiskapi.Diff: data,

	hub.ListReposRoute: open, hub.ListRoute: open, hub.InspectRoute: open, hub.DownloadRoute: open,
	hub.GetChunkRoute: open, hub.MissingChunkRoute: open,
	hub.DeleteRoute: data, hub.DeleteMineRoute: data, hub.UploadRoute: data, hub.UploadFlistRoute: data,
	hub.MergeRoute: data, hub.PutChunkRoute: data,
}

func allRoutes() []route.Route {
	var all []route.Route
	all = append(all, api.Routes...)
	all = append(all, vdiskapi.Routes...)
	all = append(all, hub.Routes...)
	return all
}

// named reports whether a route's path names a vdisk or flist (a prefix
// check applies to it).
func named(rt route.Route) bool {
	return strings.Contains(rt.Path, "{name}")
}

// refused reports a 401 or 403.
func refused(st int) bool { return st == http.StatusUnauthorized || st == http.StatusForbidden }

// TestRouteAuth checks every route's authorization on a real node, for
// every role, generated from the route tables (a new route is covered as
// soon as it is declared): no token is 401 unless the route is open; a
// reader gets 403 on every route that is not a GET (and not open); an
// operator (and a legacy "user" token) 403 on admin and node routes; a
// token limited to "vm-" 403 on every route naming another vdisk or
// flist, and on store maintenance; an admin 403 on node routes only.
func TestRouteAuth(t *testing.T) {
	all := allRoutes()
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

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 1, BaseIP: randomBase(t), DisableTLS: true}) // the route matrix, not TLS
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := "http://" + d.Nodes[0].APIAddr()
	c := client.New(addr, d.Token)
	mk := func(name, role string, prefixes ...string) string {
		t.Helper()
		tok, err := c.NewToken(ctx, api.CreateTokenRequest{Name: name, Role: role, Prefixes: prefixes})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	operator, reader, limited := mk("alice", fsm.RoleOperator), mk("watch", fsm.RoleReader), mk("ci", fsm.RoleOperator, "vm-")
	// A token as the log held them before roles grew: role "user".
	legacy := "zos_0ld70ken_" + strings.Repeat("ab", 20)
	if err := raft.Exec(ctx, d.Nodes[0].Raft(), fsm.TokenCreate, fsm.TokenCreateArgs{Token: fsm.Token{ID: "0ld70ken", Name: "old",
		Hash: orchestrator.HashToken(legacy), Role: fsm.RoleUser}}); err != nil {
		t.Fatal(err)
	}
	// status calls rt with every path argument arg; the body names arg
	// too (a clone's target), which routes with other bodies refuse as
	// 400.
	status := func(rt route.Route, token, arg string) int {
		t.Helper()
		var args []string
		for range strings.Count(rt.Path, "{") {
			args = append(args, arg)
		}
		req, err := http.NewRequestWithContext(ctx, rt.Method, addr+rt.URL(args...), strings.NewReader(`{"name":"`+arg+`"}`))
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
		none := status(rt, "", "x")
		switch {
		case want == open && refused(none):
			t.Errorf("%s is open but answers %d without a token", rt, none)
		case want != open && none != http.StatusUnauthorized:
			t.Errorf("%s without a token: %d, want 401", rt, none)
		}
		if st := status(rt, "zos_bad_token", "x"); want != open && st != http.StatusUnauthorized {
			t.Errorf("%s with an invalid token: %d, want 401", rt, st)
		}
		if want == open {
			continue // open routes take no token: no role changes them
		}
		for _, who := range []struct {
			name, token string
		}{{"operator", operator}, {"legacy user", legacy}} {
			st := status(rt, who.token, "x")
			if (want == admin || want == nodes) != (st == http.StatusForbidden) || st == http.StatusUnauthorized {
				t.Errorf("%s with an %s token: %d (access %d)", rt, who.name, st, want)
			}
		}
		st := status(rt, reader, "x")
		if wantRefused := want == admin || want == nodes || rt.Method != http.MethodGet; wantRefused != (st == http.StatusForbidden) || st == http.StatusUnauthorized {
			t.Errorf("%s with a reader token: %d, want 403: %v", rt, st, wantRefused)
		}
		st = status(rt, limited, "x")
		wantRefused := want == admin || want == nodes || want == store && rt.Method != http.MethodGet || want == data && named(rt)
		if want == data && !named(rt) {
			// Content (blobs, chunks) has no name; a create names its
			// vdisk in the body: TestRoles checks those.
			if st == http.StatusUnauthorized {
				t.Errorf("%s with a token limited to vm-: 401", rt)
			}
		} else if wantRefused != (st == http.StatusForbidden) || st == http.StatusUnauthorized {
			t.Errorf("%s naming x with a token limited to vm-: %d, want 403: %v", rt, st, wantRefused)
		}
		if want == data && named(rt) {
			if st := status(rt, limited, "vm-x"); refused(st) {
				t.Errorf("%s naming vm-x with a token limited to vm-: %d, want it let through", rt, st)
			}
		}
		st = status(rt, d.Token, "x")
		if (want == nodes) != (st == http.StatusForbidden) || st == http.StatusUnauthorized {
			t.Errorf("%s with an admin token: %d", rt, st)
		}
	}
	if st := status(api.Healthz, "", ""); st != http.StatusOK {
		t.Errorf("%s: %d, want 200", api.Healthz, st)
	}
}
