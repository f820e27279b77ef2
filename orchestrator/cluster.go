package orchestrator

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

func (s *Server) nodeStatuses(st *fsm.State, members []raft.Member, leader string) []NodeStatus {
	role := map[string]string{}
	for _, m := range members {
		if m.Voter {
			role[m.ID] = "voter"
		} else {
			role[m.ID] = "nonvoter"
		}
	}
	var out []NodeStatus
	for _, n := range st.SortedNodes() {
		out = append(out, NodeStatus{Node: *n, Raft: role[n.ID], Leader: n.ID == leader})
	}
	return out
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) error {
	rs := s.cfg.Raft.Status()
	var cs ClusterStatus
	err := s.read(r.Context(), func(st *fsm.State) error {
		cs = ClusterStatus{ClusterID: st.ClusterID, LeaderID: rs.LeaderID, LeaderAddr: rs.LeaderAddr,
			Term: rs.Term, CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex, FirstIndex: rs.FirstIndex, SnapshotIndex: rs.SnapshotIndex, Epoch: st.Epoch,
			AnsweredBy: s.cfg.NodeID, Nodes: s.nodeStatuses(st, rs.Members, rs.LeaderID)}
		return nil
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, cs)
	return nil
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	rs := s.cfg.Raft.Status()
	var out []NodeStatus
	if err := s.read(r.Context(), func(st *fsm.State) error {
		out = s.nodeStatuses(st, rs.Members, rs.LeaderID)
		return nil
	}); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) error {
	rs := s.cfg.Raft.Status()
	id := r.PathValue("id")
	var out *NodeStatus
	if err := s.readMode(r, func(st *fsm.State) error {
		for _, n := range s.nodeStatuses(st, rs.Members, rs.LeaderID) {
			if n.ID == id {
				out = &n
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if out == nil {
		return pathErr("no node %q", id)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) joinHandler(w http.ResponseWriter, r *http.Request) error {
	var req JoinRequest
	if err := httpx.DecodeJSON(r, &req); err != nil {
		return err
	}
	resp, err := s.Join(r.Context(), req.Node)
	if err != nil {
		return err
	}
	if req.CSR != "" && s.cfg.SignNode != nil {
		cert, ca, err := s.cfg.SignNode(req.Node.ID, []byte(req.CSR))
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, "invalid", "certificate request: %v", err)
		}
		resp.Cert, resp.CACert = string(cert), string(ca)
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// Join admits a node (leader only): the cluster map entry first (which
// refuses duplicate ids and addresses), then Raft membership. A node that
// is already a member with the same addresses gets the same answer again,
// so a join can be retried.
func (s *Server) Join(ctx context.Context, n fsm.Node) (*JoinResponse, error) {
	var existing *fsm.Node
	var voters int
	var secret, cluster string
	members, err := s.cfg.Raft.Members()
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.Voter {
			voters++
		}
	}
	if err := s.read(ctx, func(st *fsm.State) error {
		if e := st.Nodes[n.ID]; e != nil && e.State != fsm.NodeRemoved {
			c := *e
			existing = &c
		}
		secret, cluster = st.Secret, st.ClusterID
		return nil
	}); err != nil {
		return nil, err
	}
	inRaft := false
	for _, m := range members {
		if m.ID == n.ID {
			inRaft = true
		}
	}
	// A new node always enters as a non-voter: a voter that never comes
	// up (a typo in an address, a firewall) would cost the cluster its
	// quorum. The node promotes itself once it has caught up (Voter in
	// the answer says it should).
	voter := voters < s.cfg.MaxVoters
	if existing != nil {
		if existing.Addr != n.Addr || existing.RaftAddr != n.RaftAddr {
			return nil, httpx.Errorf(http.StatusConflict, "exists", "node id %s is already a member at %s; give the new node another --id", n.ID, existing.Addr)
		}
		voter = voter || existing.Voter
	} else {
		n.Voter = false
		if err := apply(ctx, s, fsm.NodeAdd, fsm.NodeAddArgs{Node: n}); err != nil {
			return nil, err
		}
	}
	if !inRaft {
		if err := s.cfg.Raft.AddMember(ctx, n.ID, n.RaftAddr, false); err != nil {
			if existing == nil {
				// Undo the map entry so the join can be retried cleanly.
				_ = apply(context.WithoutCancel(ctx), s, fsm.NodeRemove, fsm.NodeIDArgs{ID: n.ID})
			}
			return nil, err
		}
	}
	s.log.Info("node joined", "id", n.ID, "addr", n.Addr, "voter", voter)
	leader, _ := s.cfg.Raft.Leader()
	return &JoinResponse{ClusterID: cluster, Secret: secret, Voter: voter, LeaderID: leader}, nil
}

func (s *Server) removeHandler(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.Remove(r.Context(), id); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"removed": id})
	return nil
}

// Remove takes a node out of the cluster for good (leader only): out of
// the Raft configuration, and marked removed in the cluster map so its
// data is rebuilt elsewhere and its leases lapse.
func (s *Server) Remove(ctx context.Context, id string) error {
	var known bool
	if err := s.read(ctx, func(st *fsm.State) error {
		known = st.Nodes[id] != nil
		return nil
	}); err != nil {
		return err
	}
	if !known {
		return pathErr("no node %q", id)
	}
	if id == s.cfg.NodeID {
		// The leader removes itself: hand over first so the cluster
		// keeps a leader that can finish the job, then let it.
		if err := s.cfg.Raft.TransferLeadership(); err != nil {
			return httpx.Errorf(http.StatusConflict, "conflict", "cannot remove the leader %s: leadership transfer failed: %v", id, err)
		}
		leader, err := s.leaderAPI(ctx)
		if err != nil {
			return err
		}
		var secret string
		s.cfg.Raft.ReadStale(func(st *fsm.State) error { secret = st.Secret; return nil })
		// The new leader's removal stops this node, which cancels this
		// request's context (maybe before the answer arrives): wait for
		// the answer regardless, within a bound.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := client.NewTLS(leader.String(), secret, s.cfg.PeerTLS).RemoveNode(rctx, id); err != nil {
			return fmt.Errorf("removal of %s by the new leader: %w", id, err)
		}
		return nil
	}
	// Map first, while the node still receives the log: a live node
	// learns it was removed and stops. Then out of Raft.
	if err := apply(ctx, s, fsm.NodeRemove, fsm.NodeIDArgs{ID: id}); err != nil {
		return err
	}
	members, err := s.cfg.Raft.Members()
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID == id {
			if err := s.cfg.Raft.RemoveMember(ctx, id); err != nil {
				return err
			}
		}
	}
	s.log.Info("node removed", "id", id)
	s.promoteSpare(ctx)
	return nil
}

// promoteSpare keeps the number of voters up after a voter left: a live
// non-voter is promoted while voters are fewer than MaxVoters.
func (s *Server) promoteSpare(ctx context.Context) {
	members, err := s.cfg.Raft.Members()
	if err != nil {
		return
	}
	voters := 0
	var spares []string
	for _, m := range members {
		if m.Voter {
			voters++
		} else {
			spares = append(spares, m.ID)
		}
	}
	var up map[string]bool
	s.cfg.Raft.ReadStale(func(st *fsm.State) error {
		up = map[string]bool{}
		for _, n := range st.Nodes {
			up[n.ID] = n.State == fsm.NodeUp
		}
		return nil
	})
	for _, id := range spares {
		if voters >= s.cfg.MaxVoters {
			return
		}
		if !up[id] {
			continue
		}
		if err := s.cfg.Raft.SetVoter(ctx, id, true); err != nil {
			s.log.Warn("could not promote a non-voter", "id", id, "err", err)
			continue
		}
		_ = apply(ctx, s, fsm.NodeSetVoter, fsm.NodeVoterArgs{ID: id, Voter: true})
		s.log.Info("non-voter promoted to replace a removed voter", "id", id)
		voters++
	}
}

func (s *Server) voterHandler(voter bool) httpx.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if err := s.cfg.Raft.SetVoter(r.Context(), id, voter); err != nil {
			return httpx.Errorf(http.StatusBadRequest, "invalid", "%v", err)
		}
		if err := apply(r.Context(), s, fsm.NodeSetVoter, fsm.NodeVoterArgs{ID: id, Voter: voter}); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"id": id, "voter": voter})
		return nil
	}
}

// --- tokens ---

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	var out []TokenInfo
	if err := s.read(r.Context(), func(st *fsm.State) error {
		for _, t := range st.Tokens {
			out = append(out, TokenInfo{ID: t.ID, Name: t.Name, Role: t.EffectiveRole(), Prefixes: t.Prefixes, Created: t.Created})
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	req, err := DecodeCreateToken(r)
	if err != nil {
		return err
	}
	tok, id := NewToken()
	t := fsm.Token{ID: id, Name: req.Name, Hash: HashToken(tok), Role: req.Role, Prefixes: req.Prefixes}
	if err := apply(r.Context(), s, fsm.TokenCreate, fsm.TokenCreateArgs{Token: t}); err != nil {
		return err
	}
	s.log.Info("token created", "token", id, "name", req.Name, "role", req.Role, "prefixes", req.Prefixes)
	httpx.WriteJSON(w, http.StatusCreated, CreateTokenResponse{TokenInfo: TokenInfo{ID: id, Name: req.Name, Role: req.Role, Prefixes: req.Prefixes}, Token: tok})
	return nil
}

// DecodeCreateToken decodes and checks the body of POST /api/v1/tokens:
// a name, a role (default operator; "user" is operator) and name
// prefixes. What it accepts the state machine accepts too (it checks the
// same again when it applies the token).
func DecodeCreateToken(r *http.Request) (CreateTokenRequest, error) {
	var req CreateTokenRequest
	if err := httpx.DecodeJSON(r, &req); err != nil {
		return req, err
	}
	switch req.Role {
	case "", fsm.RoleUser:
		req.Role = fsm.RoleOperator
	case fsm.RoleAdmin, fsm.RoleOperator, fsm.RoleReader:
	default:
		return req, httpx.BadRequest("token role %q: want admin, operator or reader", req.Role)
	}
	if req.Name == "" {
		return req, httpx.BadRequest("a token needs a name (it is also the user's hub repository)")
	}
	if !fsm.ValidName(req.Name) {
		return req, httpx.BadRequest("token name %q: use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'", req.Name)
	}
	if len(req.Prefixes) == 0 {
		req.Prefixes = nil
		return req, nil
	}
	if req.Role == fsm.RoleAdmin {
		return req, httpx.BadRequest("an admin token cannot be limited to name prefixes (it could create one that is not); use --role operator")
	}
	if len(req.Prefixes) > fsm.MaxTokenPrefixes {
		return req, httpx.BadRequest("%d name prefixes, at most %d", len(req.Prefixes), fsm.MaxTokenPrefixes)
	}
	seen := map[string]bool{}
	for _, p := range req.Prefixes {
		if !fsm.ValidName(p) {
			return req, httpx.BadRequest("name prefix %q: use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'", p)
		}
		if seen[p] {
			return req, httpx.BadRequest("name prefix %q given twice", p)
		}
		seen[p] = true
	}
	return req, nil
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	if err := apply(r.Context(), s, fsm.TokenDelete, fsm.TokenDeleteArgs{ID: r.PathValue("id")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- pools ---

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) error {
	var out []fsm.Pool
	if err := s.read(r.Context(), func(st *fsm.State) error {
		for _, p := range st.Pools {
			out = append(out, *p)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createPool(w http.ResponseWriter, r *http.Request) error {
	var req fsm.PoolArgs
	if err := httpx.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := apply(r.Context(), s, fsm.PoolCreate, req); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, req)
	return nil
}

func (s *Server) deletePool(w http.ResponseWriter, r *http.Request) error {
	if err := apply(r.Context(), s, fsm.PoolDelete, fsm.PoolArgs{Name: r.PathValue("name")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// The JSON shapes of the cluster routes are defined in orchestrator/api.
type (
	NodeStatus          = api.NodeStatus
	ClusterStatus       = api.ClusterStatus
	JoinRequest         = api.JoinRequest
	JoinResponse        = api.JoinResponse
	TokenInfo           = api.TokenInfo
	CreateTokenRequest  = api.CreateTokenRequest
	CreateTokenResponse = api.CreateTokenResponse
)
