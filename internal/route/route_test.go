package route

import (
	"net/url"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct {
		r    Route
		args []string
		want string
	}{
		{New("GET", "/api/v1/cluster"), nil, "/api/v1/cluster"},
		{New("GET", "/api/v1/vdisks/{name}"), []string{"a b/c"}, "/api/v1/vdisks/a%20b%2Fc"},
		{New("DELETE", "/api/v1/vdisks/{name}/snapshots/{snap}"), []string{"d", "s1"}, "/api/v1/vdisks/d/snapshots/s1"},
		{New("PUT", "/api/v1/kv/{ns}/{key...}"), []string{"ns", "a/b c"}, "/api/v1/kv/ns/a/b%20c"},
	} {
		if got := tc.r.URL(tc.args...); got != tc.want {
			t.Errorf("%s.URL(%q) = %q, want %q", tc.r, tc.args, got, tc.want)
		}
	}
	if got := Query("/x", url.Values{"a": {"1"}}); got != "/x?a=1" {
		t.Errorf("Query = %q", got)
	}
	if got := Query("/x", nil); got != "/x" {
		t.Errorf("Query = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("URL with a missing argument did not panic")
		}
	}()
	New("GET", "/a/{b}").URL()
}
