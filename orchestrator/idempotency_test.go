package orchestrator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type kvAnswer struct {
	Version uint64 `json:"version"`
	Error   *struct {
		Code string `json:"code"`
	} `json:"error"`
}

func doPut(t *testing.T, s *Server, token, path, body string, keys ...string) (int, kvAnswer) {
	t.Helper()
	req := httptest.NewRequest("PUT", path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	var a kvAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("PUT %s: %d %q", path, w.Code, w.Body.String())
	}
	return w.Code, a
}

func kvVersionOf(t *testing.T, s *Server, key string) uint64 {
	t.Helper()
	req := httptest.NewRequest("GET", "/api/v1/kv/idem/"+key, nil)
	req.Header.Set("Authorization", "Bearer "+fuzzToken)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code == http.StatusNotFound {
		return 0
	}
	var e KVEntry
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &e) != nil {
		t.Fatalf("GET %s: %d %s", key, w.Code, w.Body.String())
	}
	return e.Version
}

// TestIdempotencyKey: a write retried with the same Idempotency-Key takes
// effect once and gets the first answer; the key is scoped to the token;
// a key reused for another body is refused; malformed keys are refused
// before anything happens.
func TestIdempotencyKey(t *testing.T) {
	s := fuzzServer(t)
	for range 3 {
		code, a := doPut(t, s, fuzzToken, "/api/v1/kv/idem/a", "one", "k-1")
		if code != 200 || a.Version != 1 {
			t.Fatalf("put with a key: %d %+v", code, a)
		}
	}
	if v := kvVersionOf(t, s, "a"); v != 1 {
		t.Fatalf("version %d after three puts with one key", v)
	}
	// The quoted (structured-field) form is the same key.
	if code, a := doPut(t, s, fuzzToken, "/api/v1/kv/idem/a", "one", `"k-1"`); code != 200 || a.Version != 1 {
		t.Fatalf("quoted key: %d %+v", code, a)
	}
	// A compare-and-swap retried after it applied answers as applied, not 409.
	for range 2 {
		if code, a := doPut(t, s, fuzzToken, "/api/v1/kv/idem/a?if_version=1", "two", "k-2"); code != 200 || a.Version != 2 {
			t.Fatalf("cas with a key: %d %+v", code, a)
		}
	}
	// Another body under a used key: 422, nothing written.
	if code, a := doPut(t, s, fuzzToken, "/api/v1/kv/idem/a", "three", "k-1"); code != http.StatusUnprocessableEntity || a.Error == nil || a.Error.Code != "key_reused" {
		t.Fatalf("key reused: %d %+v", code, a)
	}
	// Without a key every PUT is a new write.
	doPut(t, s, fuzzToken, "/api/v1/kv/idem/a", "x")
	doPut(t, s, fuzzToken, "/api/v1/kv/idem/a", "x")
	if v := kvVersionOf(t, s, "a"); v != 4 {
		t.Fatalf("version %d, want 4", v)
	}

	// Keys are per token: another admin's k-1 is its own request.
	req := httptest.NewRequest("POST", "/api/v1/tokens", strings.NewReader(`{"name":"other","role":"admin"}`))
	req.Header.Set("Authorization", "Bearer "+fuzzToken)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	var tok CreateTokenResponse
	if w.Code != 200 && w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &tok) != nil {
		t.Fatalf("create token: %d %s", w.Code, w.Body.String())
	}
	if code, a := doPut(t, s, tok.Token, "/api/v1/kv/idem/a", "three", "k-1"); code != 200 || a.Version != 5 {
		t.Fatalf("another token's key: %d %+v", code, a)
	}

	// Malformed keys: 400, nothing written.
	for _, keys := range [][]string{{""}, {`""`}, {strings.Repeat("k", MaxIdempotencyKey+1)}, {"has space"}, {"tab\t"}, {"ключ"}, {"a", "b"}} {
		code, a := doPut(t, s, fuzzToken, "/api/v1/kv/idem/bad", "x", keys...)
		if code != http.StatusBadRequest || a.Error == nil || a.Error.Code != "invalid" {
			t.Errorf("Idempotency-Key %q: %d %+v", keys, code, a)
		}
	}
	if code, _ := doPut(t, s, fuzzToken, "/api/v1/kv/idem/ok", "x", strings.Repeat("k", MaxIdempotencyKey)); code != 200 {
		t.Errorf("a key of %d characters: %d", MaxIdempotencyKey, code)
	}
	if v := kvVersionOf(t, s, "bad"); v != 0 {
		t.Fatal("a request with a malformed key was applied")
	}
}
