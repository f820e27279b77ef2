package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// snapshotVersion guards the snapshot format. Version 2 added the request
// table (State.Requests); a version 1 snapshot restores with an empty one,
// which is exact: commands logged before it carried no request ids.
const snapshotVersion = 2

type snapshotFile struct {
	Version int    `json:"version"`
	State   *State `json:"state"`
}

// WriteSnapshot writes s to w. The caller must hold s still while it runs.
func (s *State) WriteSnapshot(w io.Writer) error {
	bw := bufio.NewWriter(w)
	if err := json.NewEncoder(bw).Encode(snapshotFile{Version: snapshotVersion, State: s}); err != nil {
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	return bw.Flush()
}

// ReadSnapshot reads a State written by WriteSnapshot.
func ReadSnapshot(r io.Reader) (*State, error) {
	var f snapshotFile
	d := json.NewDecoder(bufio.NewReader(r))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("fsm: read snapshot: %w", err)
	}
	if f.Version < 1 || f.Version > snapshotVersion || f.State == nil {
		return nil, fmt.Errorf("fsm: read snapshot: unsupported version %d", f.Version)
	}
	s := f.State
	fresh := NewState()
	// Restore nil maps so Apply never writes to a nil map.
	if s.Nodes == nil {
		s.Nodes = fresh.Nodes
	}
	if s.Pools == nil {
		s.Pools = fresh.Pools
	}
	if s.VDisks == nil {
		s.VDisks = fresh.VDisks
	}
	if s.Flists == nil {
		s.Flists = fresh.Flists
	}
	if s.Tokens == nil {
		s.Tokens = fresh.Tokens
	}
	if s.Pins == nil {
		s.Pins = fresh.Pins
	}
	if s.KV == nil {
		s.KV = fresh.KV
	}
	if s.Requests == nil {
		s.Requests = fresh.Requests
	}
	return s, nil
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		panic("fsm: clone: " + err.Error()) // State always encodes
	}
	c, err := ReadSnapshot(&buf)
	if err != nil {
		panic("fsm: clone: " + err.Error()) // State always encodes
	}
	return c
}
