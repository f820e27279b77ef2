package fsm

import (
	"github.com/zosproject/zos/chunkstore"
)

// Pin ops: blobs the garbage collector keeps.
var (
	// PinAdd pins a blob (again: keeps its first time).
	PinAdd = register(OpPinAdd, (*State).applyPinAdd)

	// PinRemove unpins a blob.
	PinRemove = register(OpPinRemove, (*State).applyPinRemove)
)

// Arguments.
type PinArgs struct {
	Ref  chunkstore.Ref `json:"ref"`
	Note string         `json:"note,omitempty"`
}

func (s *State) applyPinAdd(c *Command, a PinArgs) (*Pin, error) {
	if a.Ref.IsZero() {
		return nil, errf(ErrInvalid, "pin: zero ref")
	}
	p := &Pin{Ref: a.Ref, Note: a.Note, Created: c.Time}
	if old, ok := s.Pins[a.Ref]; ok {
		p.Created = old.Created
	}
	s.Pins[a.Ref] = p
	return p, nil
}

func (s *State) applyPinRemove(c *Command, a PinArgs) (None, error) {
	if _, ok := s.Pins[a.Ref]; !ok {
		return None{}, errf(ErrNotFound, "ref %s is not pinned", a.Ref)
	}
	delete(s.Pins, a.Ref)
	return None{}, nil
}
