package authz

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDecide(t *testing.T) {
	admin := Principal{TokenID: "a", Role: Admin}
	op := Principal{TokenID: "o", Role: Operator}
	rd := Principal{TokenID: "r", Role: Reader}
	vm := Principal{TokenID: "v", Role: Operator, Prefixes: []string{"vm-", "tmpl-"}}
	rvm := Principal{TokenID: "rv", Role: Reader, Prefixes: []string{"vm-"}}
	node := Principal{TokenID: "node", Role: Admin, Node: true}
	for _, tc := range []struct {
		p      Principal
		scope  Scope
		method string
		names  []string
		want   Reason // "" allowed
	}{
		{admin, Manage, "POST", nil, ""},
		{admin, Internal, "POST", nil, NodesOnly},
		{node, Internal, "POST", nil, ""},
		{node, Data, "DELETE", []string{"x"}, ""},
		{op, Manage, "POST", nil, WrongRole},
		{op, Manage, "GET", nil, WrongRole},
		{op, Data, "POST", []string{"x"}, ""},
		{op, Store, "POST", nil, ""},
		{rd, Read, "GET", nil, ""},
		{rd, Data, "GET", []string{"x"}, ""},
		{rd, Data, "HEAD", []string{"x"}, ""},
		{rd, Data, "POST", []string{"x"}, ReadOnly},
		{rd, Read, "DELETE", nil, ReadOnly},
		{rd, Manage, "GET", nil, WrongRole},
		{vm, Data, "POST", []string{"vm-1"}, ""},
		{vm, Data, "POST", []string{"tmpl-x", "vm-1"}, ""},
		{vm, Data, "POST", []string{"vm-1", "db"}, Prefix},
		{vm, Data, "GET", []string{"db"}, Prefix},
		{vm, Data, "POST", []string{""}, Prefix},
		{vm, Data, "POST", nil, ""}, // content: no names
		{vm, Store, "POST", nil, Prefix},
		{vm, Store, "GET", nil, ""},
		{vm, Manage, "POST", nil, WrongRole},
		{rvm, Data, "GET", []string{"vm-1"}, ""},
		{rvm, Data, "GET", []string{"db"}, Prefix},
		{rvm, Data, "POST", []string{"vm-1"}, ReadOnly},
		{Principal{Role: "root"}, Data, "GET", nil, WrongRole},
		{Principal{}, Read, "GET", nil, WrongRole},
	} {
		got := Decide(tc.p, tc.scope, tc.method, tc.names...)
		var reason Reason
		if got != nil {
			reason = got.Reason
		}
		if reason != tc.want {
			t.Errorf("Decide(%s %v, %s, %s, %q) = %v, want %q", tc.p.Role, tc.p.Prefixes, tc.scope, tc.method, tc.names, got, tc.want)
		}
	}
}

// TestGuard: a refusal is logged with the token id, route and reason,
// never anything of the secret, and counted by reason.
func TestGuard(t *testing.T) {
	var buf bytes.Buffer
	reg := prometheus.NewRegistry()
	g := NewGuard(slog.New(slog.NewTextHandler(&buf, nil)), reg)
	r := httptest.NewRequest("POST", "/api/v1/vdisks/db/clone", nil)
	r.Header.Set("Authorization", "Bearer zos_0badc0de_supersecret")
	r.Pattern = "POST /api/v1/vdisks/{name}/clone"
	p := Principal{TokenID: "0badc0de", Name: "ci", Role: Operator, Prefixes: []string{"vm-"}}
	if err := g.Check(r, p, Data, "db", "vm-2"); err == nil || !strings.Contains(err.Error(), `"db"`) {
		t.Fatalf("Check = %v", err)
	}
	if err := g.Check(r, p, Data, "vm-1", "vm-2"); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, want := range []string{"token=0badc0de", `route="POST /api/v1/vdisks/{name}/clone"`, "reason=prefix", "status=403"} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q lacks %s", line, want)
		}
	}
	if strings.Contains(line, "supersecret") {
		t.Errorf("log holds the secret: %s", line)
	}
	if n := testutil.ToFloat64(g.refusals.WithLabelValues("prefix")); n != 1 {
		t.Errorf("refusals{prefix} = %v", n)
	}
	// A second guard on the same registry shares the counter.
	if g2 := NewGuard(slog.New(slog.DiscardHandler), reg); g2.refusals != g.refusals {
		t.Error("second guard has its own counter")
	}
}
