package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// TestTokenRevocation: in a 3-process cluster a token works on every node
// as soon as it is created, and gets 401 on every node as soon as its
// delete returns, whichever node took the delete; an operator token is
// 403 on token creation everywhere.
func TestTokenRevocation(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for round := range 3 {
		admin := c.Client(round)
		tok, err := admin.NewToken(ctx, api.CreateTokenRequest{Name: "op", Role: fsm.RoleOperator, Prefixes: []string{"vm-"}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			cl := c.ClientAs(i, tok.Token)
			if err := cl.Do(ctx, http.MethodGet, "/api/v1/cluster", nil, nil); err != nil {
				t.Fatalf("round %d: the new token on node %d: %v", round, i, err)
			}
			if _, err := cl.CreateToken(ctx, "evil", fsm.RoleAdmin); !client.IsCode(err, "forbidden") {
				t.Fatalf("round %d: an operator creating a token on node %d: %v", round, i, err)
			}
		}
		if err := c.Client((round+1)%3).DeleteToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			err := c.ClientAs(i, tok.Token).Do(ctx, http.MethodGet, "/api/v1/cluster", nil, nil)
			if !client.IsCode(err, "unauthorized") {
				t.Fatalf("round %d: the revoked token on node %d right after the delete: %v, want 401", round, i, err)
			}
		}
	}
}
