package fsm

import (
	"strings"
)

// Token ops: hashed API tokens.
var (
	// TokenCreate registers a token by the hash of its secret.
	TokenCreate = register(OpTokenCreate, (*State).applyTokenCreate)

	// TokenDelete deletes a token other than the last admin one.
	TokenDelete = register(OpTokenDelete, (*State).applyTokenDelete)
)

// Arguments.
type (
	TokenCreateArgs struct {
		Token Token `json:"token"`
	}
	TokenDeleteArgs struct {
		ID string `json:"id"`
	}
)

func checkToken(t *Token) error {
	if err := checkName("token", t.ID); err != nil {
		return err
	}
	if len(t.Hash) != 64 || strings.Trim(t.Hash, "0123456789abcdef") != "" {
		return errf(ErrInvalid, "token %s: hash must be 64 lowercase hex characters", t.ID)
	}
	return nil
}

// MaxTokenPrefixes bounds the name prefixes of one token.
const MaxTokenPrefixes = 32

// checkRole checks a new token's role and prefixes. RoleUser stays
// accepted: the log holds token.create entries with it, and replaying
// them must give the State it gave.
func checkRole(t *Token) error {
	switch t.Role {
	case RoleAdmin, RoleOperator, RoleReader, RoleUser:
	default:
		return errf(ErrInvalid, "token role %q: want admin, operator or reader", t.Role)
	}
	if len(t.Prefixes) == 0 {
		t.Prefixes = nil // an empty list and none are the same token
		return nil
	}
	if t.Role == RoleAdmin {
		return errf(ErrInvalid, "token %s: an admin token cannot be limited to name prefixes (it could create one that is not)", t.ID)
	}
	if len(t.Prefixes) > MaxTokenPrefixes {
		return errf(ErrInvalid, "token %s: %d name prefixes, at most %d", t.ID, len(t.Prefixes), MaxTokenPrefixes)
	}
	seen := map[string]bool{}
	for _, p := range t.Prefixes {
		if !ValidName(p) {
			return errf(ErrInvalid, "token %s: name prefix %q: use 1-%d letters, digits, '.', '_' or '-', not starting with '.' or '-'", t.ID, p, maxNameLength)
		}
		if seen[p] {
			return errf(ErrInvalid, "token %s: name prefix %q given twice", t.ID, p)
		}
		seen[p] = true
	}
	return nil
}

func (s *State) applyTokenCreate(c *Command, a TokenCreateArgs) (*Token, error) {
	t := a.Token
	if err := checkToken(&t); err != nil {
		return nil, err
	}
	if err := checkRole(&t); err != nil {
		return nil, err
	}
	if _, ok := s.Tokens[t.ID]; ok {
		return nil, errf(ErrExists, "token %s exists", t.ID)
	}
	for _, o := range s.Tokens {
		if o.Hash == t.Hash {
			return nil, errf(ErrExists, "token already registered as %s", o.ID)
		}
	}
	t.Created = c.Time
	s.Tokens[t.ID] = &t
	return &t, nil
}

func (s *State) applyTokenDelete(c *Command, a TokenDeleteArgs) (None, error) {
	t, ok := s.Tokens[a.ID]
	if !ok {
		return None{}, errf(ErrNotFound, "no token %q", a.ID)
	}
	if t.Role == RoleAdmin {
		admins := 0
		for _, o := range s.Tokens {
			if o.Role == RoleAdmin {
				admins++
			}
		}
		if admins == 1 {
			return None{}, errf(ErrInvalid, "token %s is the last admin token", a.ID)
		}
	}
	delete(s.Tokens, a.ID)
	return None{}, nil
}

// TokenByHash finds a token by the hex SHA-256 of its secret.
func (s *State) TokenByHash(hash string) *Token {
	for _, t := range s.Tokens {
		if t.Hash == hash {
			return t
		}
	}
	return nil
}
