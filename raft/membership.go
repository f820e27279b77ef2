package raft

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	hraft "github.com/hashicorp/raft"
)

// Member is one server of the Raft configuration.
type Member struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
}

// Members returns the current Raft configuration.
func (s *Server) Members() ([]Member, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft: configuration: %w", err)
	}
	leader, _ := s.Leader()
	var out []Member
	for _, sv := range f.Configuration().Servers {
		out = append(out, Member{ID: string(sv.ID), Addr: string(sv.Address),
			Voter: sv.Suffrage == hraft.Voter, Leader: string(sv.ID) == leader})
	}
	return out, nil
}

func (s *Server) timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return s.cfg.ApplyTimeout
}

func (s *Server) membershipErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, hraft.ErrNotLeader) || errors.Is(err, hraft.ErrLeadershipLost) {
		return s.notLeader()
	}
	return fmt.Errorf("raft: %s: %w", what, err)
}

// AddMember adds a server to the configuration as a voter or a non-voter.
// Leader only. Adding a member that is already there with the same address
// and suffrage is a no-op.
func (s *Server) AddMember(ctx context.Context, id, addr string, voter bool) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	var f hraft.IndexFuture
	if voter {
		f = s.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(addr), 0, s.timeout(ctx))
	} else {
		f = s.raft.AddNonvoter(hraft.ServerID(id), hraft.ServerAddress(addr), 0, s.timeout(ctx))
	}
	return s.membershipErr("add "+id, f.Error())
}

// RemoveMember removes a server from the configuration. Leader only.
func (s *Server) RemoveMember(ctx context.Context, id string) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	return s.membershipErr("remove "+id, s.raft.RemoveServer(hraft.ServerID(id), 0, s.timeout(ctx)).Error())
}

// SetVoter promotes a non-voter to voter or demotes a voter. Leader only.
func (s *Server) SetVoter(ctx context.Context, id string, voter bool) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	members, err := s.Members()
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID != id {
			continue
		}
		if voter {
			return s.membershipErr("promote "+id, s.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(m.Addr), 0, s.timeout(ctx)).Error())
		}
		return s.membershipErr("demote "+id, s.raft.DemoteVoter(hraft.ServerID(id), 0, s.timeout(ctx)).Error())
	}
	return fmt.Errorf("raft: %s is not a member", id)
}

// TransferLeadership asks the leader to hand over to another voter.
func (s *Server) TransferLeadership() error {
	return s.membershipErr("transfer leadership", s.raft.LeadershipTransfer().Error())
}

// Status is a point-in-time view of this server.
type Status struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// FirstIndex is the oldest entry still in the local log; entries
	// before it live only in snapshots.
	FirstIndex    uint64    `json:"first_index"`
	SnapshotIndex uint64    `json:"snapshot_index"`
	LeaderID      string    `json:"leader_id"`
	LeaderAddr    string    `json:"leader_addr"`
	LastContact   time.Time `json:"last_contact,omitzero"`
	Members       []Member  `json:"members"`
}

// Status returns the server's view of the group.
func (s *Server) Status() Status {
	id, addr := s.Leader()
	st := Status{ID: s.cfg.ID, State: s.raft.State().String(), Term: s.raft.CurrentTerm(),
		CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(), LastIndex: s.raft.LastIndex(),
		LeaderID: id, LeaderAddr: addr}
	if !s.IsLeader() {
		st.LastContact = s.raft.LastContact()
	}
	st.FirstIndex, _ = s.store.FirstIndex()
	st.SnapshotIndex, _ = strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64)
	st.Members, _ = s.Members()
	return st
}
