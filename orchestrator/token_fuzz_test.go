package orchestrator

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/raft/fsm"
)

// FuzzCreateTokenBody decodes arbitrary token create bodies: a body
// DecodeCreateToken accepts names a role of the three (admin without
// prefixes) and makes a token the state machine accepts too, so a valid
// request is never refused later by the log; a body it refuses is a 400.
func FuzzCreateTokenBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"bob"}`,
		`{"name":"bob","role":"user"}`,
		`{"name":"ci","role":"operator","prefixes":["vm-","tmpl-"]}`,
		`{"name":"watch","role":"reader"}`,
		`{"name":"root","role":"admin","prefixes":["vm-"]}`,
		`{"name":"x","role":"operator","prefixes":["vm-","vm-"]}`,
		`{"name":"x","prefixes":[""]}`,
		`{"name":"x","prefixes":null}`,
		`{"name":"x","role":"operator","secret":"s"}`,
		`{"name":"-x"}`,
		`{"name":"x"} {}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/api/v1/tokens", bytes.NewReader(body))
		req, err := DecodeCreateToken(r)
		if err != nil {
			if st, _ := httpx.Classify(err); st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
				t.Fatalf("refused %q with %d: %v", body, st, err)
			}
			return
		}
		switch req.Role {
		case fsm.RoleAdmin, fsm.RoleOperator, fsm.RoleReader:
		default:
			t.Fatalf("accepted role %q", req.Role)
		}
		if req.Role == fsm.RoleAdmin && len(req.Prefixes) > 0 {
			t.Fatalf("accepted an admin token with prefixes %q", req.Prefixes)
		}
		s := fsm.NewState()
		mustApply(t, s, fsm.OpInit, fsm.InitArgs{ClusterID: "c", Secret: "0123456789abcdef0123",
			Admin: fsm.Token{ID: "admin", Name: "admin", Hash: HashToken("a")}})
		tok, id := NewToken()
		mustApply(t, s, fsm.OpTokenCreate, fsm.TokenCreateArgs{Token: fsm.Token{ID: id, Name: req.Name, Hash: HashToken(tok),
			Role: req.Role, Prefixes: req.Prefixes}})
		if got := s.Tokens[id]; got.EffectiveRole() != req.Role || len(got.Prefixes) != len(req.Prefixes) {
			t.Fatalf("stored %+v for %+v", got, req)
		}
	})
}

func mustApply(t *testing.T, s *fsm.State, op string, args any) {
	t.Helper()
	c, err := fsm.NewCommand(op, 1, args)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(&c); err != nil {
		t.Fatalf("%s %+v: the API accepted what the state machine refuses: %v", op, args, err)
	}
}
