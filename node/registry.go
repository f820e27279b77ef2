package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// flistRegistry is the hub's Registry over the control plane: the flist
// registry of the FSM. Source and stats ride in the record's metadata.
type flistRegistry struct{ c raft.Control }

var _ hub.Registry = flistRegistry{}

func (r flistRegistry) Put(ctx context.Context, e hub.Entry) error {
	stats, err := json.Marshal(e.Stats)
	if err != nil {
		return err
	}
	meta := map[string]string{"stats": string(stats)}
	if e.Source != "" {
		meta["source"] = e.Source
	}
	err = raft.Exec(ctx, r.c, fsm.FlistPut, fsm.FlistPutArgs{Flist: fsm.Flist{Repo: e.Repo, Name: e.Name, Ref: e.Ref,
		Size: e.Size, Owner: e.Owner, Meta: meta}})
	return err
}

func toEntry(f *fsm.Flist) hub.Entry {
	e := hub.Entry{Repo: f.Repo, Name: f.Name, Ref: f.Ref, Size: f.Size, Owner: f.Owner,
		Created: time.Unix(0, f.Updated), Source: f.Meta["source"]}
	if s := f.Meta["stats"]; s != "" {
		json.Unmarshal([]byte(s), &e.Stats)
	}
	return e
}

func (r flistRegistry) Get(ctx context.Context, repo, name string) (hub.Entry, error) {
	var e hub.Entry
	found := false
	err := r.c.Read(ctx, func(st *fsm.State) error {
		if f := st.Flists[repo+"/"+name]; f != nil {
			e, found = toEntry(f), true
		}
		return nil
	})
	if err != nil {
		return e, err
	}
	if !found {
		return e, fmt.Errorf("%w: flist %s/%s", hub.ErrNotFound, repo, name)
	}
	return e, nil
}

func (r flistRegistry) List(ctx context.Context, repo string) ([]hub.Entry, error) {
	var out []hub.Entry
	err := r.c.Read(ctx, func(st *fsm.State) error {
		for _, f := range st.SortedFlists() {
			if f.Repo == repo {
				out = append(out, toEntry(f))
			}
		}
		return nil
	})
	return out, err
}

func (r flistRegistry) ListRepos(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	err := r.c.Read(ctx, func(st *fsm.State) error {
		for _, f := range st.Flists {
			seen[f.Repo] = true
		}
		return nil
	})
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, err
}

func (r flistRegistry) Delete(ctx context.Context, repo, name string) error {
	err := raft.Exec(ctx, r.c, fsm.FlistDelete, fsm.FlistDeleteArgs{Repo: repo, Name: name})
	if errors.Is(err, fsm.ErrNotFound) {
		return fmt.Errorf("%w: flist %s/%s", hub.ErrNotFound, repo, name)
	}
	return err
}
