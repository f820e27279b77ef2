package fsm

// --- pins ---

func (s *State) applyPinAdd(c *Command) (any, error) {
	var a PinArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

func (s *State) applyPinRemove(c *Command) (any, error) {
	var a PinArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if _, ok := s.Pins[a.Ref]; !ok {
		return nil, errf(ErrNotFound, "ref %s is not pinned", a.Ref)
	}
	delete(s.Pins, a.Ref)
	return nil, nil
}

// --- key/value ---

func checkKV(ns, key string) error {
	if err := checkName("namespace", ns); err != nil {
		return err
	}
	if key == "" || len(key) > 1024 {
		return errf(ErrInvalid, "key must be 1-1024 bytes")
	}
	return nil
}

func (s *State) applyKVPut(c *Command) (any, error) {
	var a KVPutArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if err := checkKV(a.NS, a.Key); err != nil {
		return nil, err
	}
	if len(a.Value) > MaxKVValue {
		return nil, errf(ErrInvalid, "value of %d bytes exceeds %d", len(a.Value), MaxKVValue)
	}
	cur := s.KV[a.NS][a.Key]
	if a.IfVersion != nil {
		have := uint64(0)
		if cur != nil {
			have = cur.Version
		}
		if have != *a.IfVersion {
			return nil, errf(ErrConflict, "%s/%s is at version %d, not %d", a.NS, a.Key, have, *a.IfVersion)
		}
	}
	ns := s.KV[a.NS]
	if ns == nil {
		ns = map[string]*KV{}
		s.KV[a.NS] = ns
	}
	v := &KV{Value: a.Value, Version: 1}
	if cur != nil {
		v.Version = cur.Version + 1
	}
	ns[a.Key] = v
	return v, nil
}

func (s *State) applyKVDelete(c *Command) (any, error) {
	var a KVDeleteArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if err := checkKV(a.NS, a.Key); err != nil {
		return nil, err
	}
	cur := s.KV[a.NS][a.Key]
	if cur == nil {
		return nil, errf(ErrNotFound, "no key %s/%s", a.NS, a.Key)
	}
	if a.IfVersion != nil && cur.Version != *a.IfVersion {
		return nil, errf(ErrConflict, "%s/%s is at version %d, not %d", a.NS, a.Key, cur.Version, *a.IfVersion)
	}
	delete(s.KV[a.NS], a.Key)
	if len(s.KV[a.NS]) == 0 {
		delete(s.KV, a.NS)
	}
	return nil, nil
}
