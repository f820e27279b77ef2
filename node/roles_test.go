package node

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// call makes one API request and returns its status.
func call(t *testing.T, ctx context.Context, method, url, token, ctype, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func oneFileTar(t *testing.T) string {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("hello"))
	tw.Close()
	return buf.String()
}

// TestRoles: an operator creates and writes vdisks and flists but cannot
// create tokens or remove nodes; a token limited to vm- touches vm-*
// only, a clone's source and target both; a reader writes nothing.
func TestRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 1, BaseIP: randomBase(t), DisableTLS: true}) // roles, not TLS
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addr := "http://" + d.Nodes[0].APIAddr()
	adm := client.New(addr, d.Token)
	mk := func(name, role string, prefixes ...string) string {
		tok, err := adm.NewToken(ctx, api.CreateTokenRequest{Name: name, Role: role, Prefixes: prefixes})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	op, ci, rd := mk("alice", fsm.RoleOperator), mk("ci", fsm.RoleOperator, "vm-", "tmpl-"), mk("watch", fsm.RoleReader)
	const js = "application/json"
	expect := func(want int, method, path, token, ctype, body string) {
		t.Helper()
		if got := call(t, ctx, method, addr+path, token, ctype, body); got != want {
			t.Errorf("%s %s %s: %d, want %d", method, path, body, got, want)
		}
	}

	// The operator: vdisks and flists.
	expect(201, "POST", "/api/v1/vdisks", op, js, `{"name":"db","size":"1M"}`)
	expect(201, "POST", "/api/v1/vdisks/db/snapshots", op, js, `{"name":"s1"}`)
	expect(201, "POST", "/api/v1/vdisks/db/clone", op, js, `{"name":"db2","snapshot":"s1"}`)
	expect(200, "POST", "/api/flist/me/upload?name=base", op, "application/x-tar", oneFileTar(t))
	// ... but no tokens, no membership, no pools.
	expect(403, "POST", "/api/v1/tokens", op, js, `{"name":"evil","role":"admin"}`)
	expect(403, "GET", "/api/v1/tokens", op, "", "")
	expect(403, "DELETE", "/api/v1/nodes/"+d.Nodes[0].ID(), op, "", "")
	expect(403, "POST", "/api/v1/pools", op, js, `{"name":"p","k":1,"m":0}`)

	// The prefix-limited token.
	expect(201, "POST", "/api/v1/vdisks", ci, js, `{"name":"vm-1","size":"1M"}`)
	expect(403, "POST", "/api/v1/vdisks", ci, js, `{"name":"web","size":"1M"}`)
	expect(403, "POST", "/api/v1/vdisks", ci, js, `{"name":"vm-3","from":"db"}`) // a clone of another's vdisk
	expect(201, "POST", "/api/v1/vdisks/vm-1/snapshots", ci, js, `{"name":"s1"}`)
	expect(201, "POST", "/api/v1/vdisks/vm-1/clone", ci, js, `{"name":"tmpl-1","snapshot":"s1"}`)
	expect(403, "POST", "/api/v1/vdisks/vm-1/clone", ci, js, `{"name":"web","snapshot":"s1"}`) // target
	expect(403, "POST", "/api/v1/vdisks/db/clone", ci, js, `{"name":"vm-2","snapshot":"s1"}`)  // source
	expect(403, "GET", "/api/v1/vdisks/db", ci, "", "")
	expect(403, "DELETE", "/api/v1/vdisks/db", ci, "", "")
	expect(200, "GET", "/api/v1/vdisks/vm-1", ci, "", "")
	expect(403, "POST", "/api/v1/store/gc", ci, js, `{}`)
	expect(200, "POST", "/api/flist/me/upload?name=vm-base", ci, "application/x-tar", oneFileTar(t))
	expect(403, "POST", "/api/flist/me/upload?name=base", ci, "application/x-tar", oneFileTar(t))
	expect(403, "DELETE", "/api/flist/alice/base", ci, "", "")
	list, err := client.New(addr, ci).VDisks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range list {
		if !strings.HasPrefix(v.Name, "vm-") && !strings.HasPrefix(v.Name, "tmpl-") {
			t.Errorf("the limited token lists %s", v.Name)
		}
	}
	if len(list) != 2 {
		t.Errorf("the limited token lists %d vdisks, want 2 (vm-1, tmpl-1)", len(list))
	}

	// The reader reads everything and writes nothing.
	expect(200, "GET", "/api/v1/vdisks/db", rd, "", "")
	expect(403, "POST", "/api/v1/vdisks", rd, js, `{"name":"r1","size":"1M"}`)
	expect(403, "DELETE", "/api/v1/vdisks/db", rd, "", "")
	expect(403, "POST", "/api/flist/me/upload?name=r", rd, "application/x-tar", oneFileTar(t))

	// Every list shows roles and prefixes, never a secret.
	toks, err := adm.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, tk := range toks {
		roles[tk.Name] = tk.Role + " " + strings.Join(tk.Prefixes, ",")
	}
	if roles["ci"] != "operator vm-,tmpl-" || roles["watch"] != "reader " || roles["admin"] != "admin " {
		t.Errorf("token list: %v", roles)
	}
}

// TestRevokeEverywhere: a token deleted on one node of three gets 401 on
// every node as soon as the delete returns (and one just created works
// on every node at once).
func TestRevokeEverywhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 3, BaseIP: randomBase(t), DisableTLS: true}) // roles, not TLS
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for round := range 5 {
		// Create and delete through a different node each round, the
		// leader's and the followers'.
		via := d.Nodes[round%3]
		c := client.New("http://"+via.APIAddr(), d.Token)
		tok, err := c.NewToken(ctx, api.CreateTokenRequest{Name: "tmp", Role: fsm.RoleReader})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range d.Nodes {
			if st := call(t, ctx, "GET", "http://"+n.APIAddr()+"/api/v1/cluster", tok.Token, "", ""); st != 200 {
				t.Fatalf("round %d: a new token on %s: %d, want 200", round, n.ID(), st)
			}
		}
		if err := c.DeleteToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		for _, n := range d.Nodes {
			if st := call(t, ctx, "GET", "http://"+n.APIAddr()+"/api/v1/cluster", tok.Token, "", ""); st != http.StatusUnauthorized {
				t.Fatalf("round %d: the revoked token on %s right after the delete via %s: %d, want 401", round, n.ID(), via.ID(), st)
			}
		}
	}
}
