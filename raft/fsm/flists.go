package fsm

// Flist ops: the flist registry.
var (
	// FlistPut registers (or replaces) an flist.
	FlistPut = register(OpFlistPut, (*State).applyFlistPut)

	// FlistDelete unregisters an flist.
	FlistDelete = register(OpFlistDelete, (*State).applyFlistDelete)
)

// Arguments.
type (
	FlistPutArgs struct {
		Flist Flist `json:"flist"`
	}
	FlistDeleteArgs struct {
		Repo string `json:"repo"`
		Name string `json:"name"`
	}
)

func (s *State) applyFlistPut(c *Command, a FlistPutArgs) (*Flist, error) {
	f := a.Flist
	if err := checkName("repository", f.Repo); err != nil {
		return nil, err
	}
	if err := checkName("flist", f.Name); err != nil {
		return nil, err
	}
	if f.Ref.IsZero() || f.Size < 0 {
		return nil, errf(ErrInvalid, "flist %s/%s: needs a ref and a size", f.Repo, f.Name)
	}
	key := f.Repo + "/" + f.Name
	f.Updated = c.Time
	if old, ok := s.Flists[key]; ok {
		f.Created = old.Created
	} else {
		f.Created = c.Time
	}
	s.Flists[key] = &f
	return &f, nil
}

func (s *State) applyFlistDelete(c *Command, a FlistDeleteArgs) (None, error) {
	key := a.Repo + "/" + a.Name
	if _, ok := s.Flists[key]; !ok {
		return None{}, errf(ErrNotFound, "no flist %s", key)
	}
	delete(s.Flists, key)
	return None{}, nil
}
