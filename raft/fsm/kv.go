package fsm

// Key/value ops: the orchestrator's namespaced store.
var (
	// KVPut writes a key, a compare-and-swap with IfVersion.
	KVPut = register(OpKVPut, (*State).applyKVPut)

	// KVDelete deletes a key, a compare-and-swap with IfVersion.
	KVDelete = register(OpKVDelete, (*State).applyKVDelete)
)

// Arguments.
type (
	KVPutArgs struct {
		NS    string `json:"ns"`
		Key   string `json:"key"`
		Value []byte `json:"value"`
		// IfVersion, when set, makes the write a compare-and-swap: 0
		// means "must not exist".
		IfVersion *uint64 `json:"if_version,omitempty"`
	}
	KVDeleteArgs struct {
		NS        string  `json:"ns"`
		Key       string  `json:"key"`
		IfVersion *uint64 `json:"if_version,omitempty"`
	}
)

func checkKV(ns, key string) error {
	if err := checkName("namespace", ns); err != nil {
		return err
	}
	if key == "" || len(key) > maxKVKey {
		return errf(ErrInvalid, "key must be 1-%d bytes", maxKVKey)
	}
	return nil
}

func (s *State) applyKVPut(c *Command, a KVPutArgs) (*KV, error) {
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

func (s *State) applyKVDelete(c *Command, a KVDeleteArgs) (None, error) {
	if err := checkKV(a.NS, a.Key); err != nil {
		return None{}, err
	}
	cur := s.KV[a.NS][a.Key]
	if cur == nil {
		return None{}, errf(ErrNotFound, "no key %s/%s", a.NS, a.Key)
	}
	if a.IfVersion != nil && cur.Version != *a.IfVersion {
		return None{}, errf(ErrConflict, "%s/%s is at version %d, not %d", a.NS, a.Key, cur.Version, *a.IfVersion)
	}
	delete(s.KV[a.NS], a.Key)
	if len(s.KV[a.NS]) == 0 {
		delete(s.KV, a.NS)
	}
	return None{}, nil
}
