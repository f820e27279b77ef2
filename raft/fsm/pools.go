package fsm

// Pool ops.
var (
	// PoolCreate creates a pool with an erasure-coding profile (0+0:
	// automatic).
	PoolCreate = register(OpPoolCreate, (*State).applyPoolCreate)

	// PoolDelete deletes an empty pool other than the default one.
	PoolDelete = register(OpPoolDelete, (*State).applyPoolDelete)
)

// Arguments.
type PoolArgs struct {
	Name string `json:"name"`
	K    int    `json:"k"`
	M    int    `json:"m"`
}

func (s *State) applyPoolCreate(c *Command, a PoolArgs) (*Pool, error) {
	if err := checkName("pool", a.Name); err != nil {
		return nil, err
	}
	if _, ok := s.Pools[a.Name]; ok {
		return nil, errf(ErrExists, "pool %s exists", a.Name)
	}
	if a.K < 0 || a.M < 0 || (a.K == 0 && a.M != 0) || a.K+a.M > MaxShards {
		return nil, errf(ErrInvalid, "pool %s: profile %d+%d: want k >= 1, m >= 0, k+m <= %d (or 0+0 for automatic)", a.Name, a.K, a.M, MaxShards)
	}
	if live := s.LiveNodes(); a.K+a.M > live {
		return nil, errf(ErrInvalid, "pool %s: profile %d+%d needs %d nodes, the cluster has %d", a.Name, a.K, a.M, a.K+a.M, live)
	}
	p := &Pool{Name: a.Name, K: a.K, M: a.M, Created: c.Time}
	s.Pools[a.Name] = p
	return p, nil
}

func (s *State) applyPoolDelete(c *Command, a PoolArgs) (None, error) {
	if _, ok := s.Pools[a.Name]; !ok {
		return None{}, errf(ErrNotFound, "no pool %q", a.Name)
	}
	if a.Name == DefaultPool {
		return None{}, errf(ErrInvalid, "the default pool cannot be deleted")
	}
	for _, v := range s.VDisks {
		if v.Pool == a.Name {
			return None{}, errf(ErrInvalid, "pool %s still holds vdisk %s", a.Name, v.Name)
		}
	}
	delete(s.Pools, a.Name)
	return None{}, nil
}
