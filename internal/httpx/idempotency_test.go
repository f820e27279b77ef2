package httpx

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIdempotencyKey(t *testing.T) {
	for _, tc := range []struct {
		method string
		vals   []string
		key    string
		bad    bool
	}{
		{"PUT", nil, "", false},
		{"POST", []string{"k-1"}, "k-1", false},
		{"DELETE", []string{`"k-1"`}, "k-1", false},
		{"GET", []string{"has space"}, "", false}, // reads take no key
		{"PUT", []string{strings.Repeat("k", MaxIdempotencyKey)}, strings.Repeat("k", MaxIdempotencyKey), false},
		{"PUT", []string{strings.Repeat("k", MaxIdempotencyKey+1)}, "", true},
		{"PUT", []string{""}, "", true},
		{"PUT", []string{`""`}, "", true},
		{"PUT", []string{"has space"}, "", true},
		{"PUT", []string{"ключ"}, "", true},
		{"PUT", []string{"a", "b"}, "", true},
	} {
		r := httptest.NewRequest(tc.method, "/x", nil)
		for _, v := range tc.vals {
			r.Header.Add(IdempotencyHeader, v)
		}
		key, err := IdempotencyKey(r)
		if key != tc.key || (err != nil) != tc.bad {
			t.Errorf("%s %q: %q, %v", tc.method, tc.vals, key, err)
		}
		if st, _ := Classify(err); err != nil && st != 400 {
			t.Errorf("%q: status %d, want 400", tc.vals, st)
		}
	}
}
