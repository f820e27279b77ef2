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

func (s *State) applyTokenCreate(c *Command, a TokenCreateArgs) (*Token, error) {
	t := a.Token
	if err := checkToken(&t); err != nil {
		return nil, err
	}
	if t.Role != RoleAdmin && t.Role != RoleUser {
		return nil, errf(ErrInvalid, "token role %q: want admin or user", t.Role)
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
