package client

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"strconv"

	"github.com/zosproject/zos/internal/route"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/raft/fsm"
)

// call sends a JSON request on rt (path arguments in args) and decodes the
// answer into out (unless nil).
func (c *Client) call(ctx context.Context, rt route.Route, q url.Values, body, out any, args ...string) error {
	return c.Do(ctx, rt.Method, route.Query(rt.URL(args...), q), body, out)
}

// ClusterStatus returns the cluster: leader, term, indexes, epoch, nodes.
func (c *Client) ClusterStatus(ctx context.Context) (api.ClusterStatus, error) {
	var out api.ClusterStatus
	return out, c.call(ctx, api.GetCluster, nil, nil, &out)
}

// Nodes lists the nodes of the cluster map.
func (c *Client) Nodes(ctx context.Context) ([]api.NodeStatus, error) {
	var out []api.NodeStatus
	return out, c.call(ctx, api.ListNodes, nil, nil, &out)
}

// Node returns one node; stale reads the answering node's replica instead
// of a linearizable read (it works without a leader).
func (c *Client) Node(ctx context.Context, id string, stale bool) (api.NodeStatus, error) {
	var q url.Values
	if stale {
		q = url.Values{"stale": {"true"}}
	}
	var out api.NodeStatus
	return out, c.call(ctx, api.GetNode, q, nil, &out, id)
}

// Join asks the cluster to admit n (admin or the cluster secret).
func (c *Client) Join(ctx context.Context, n fsm.Node) (api.JoinResponse, error) {
	var out api.JoinResponse
	return out, c.call(ctx, api.JoinNode, nil, api.JoinRequest{Node: n}, &out)
}

// RemoveNode removes a node from the cluster for good (admin).
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	return c.call(ctx, api.RemoveNode, nil, nil, nil, id)
}

// Promote makes a node a Raft voter (admin).
func (c *Client) Promote(ctx context.Context, id string) error {
	return c.call(ctx, api.PromoteNode, nil, nil, nil, id)
}

// Demote makes a node a Raft non-voter (admin).
func (c *Client) Demote(ctx context.Context, id string) error {
	return c.call(ctx, api.DemoteNode, nil, nil, nil, id)
}

// Tokens lists the API tokens, without secrets (admin).
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	return out, c.call(ctx, api.ListTokens, nil, nil, &out)
}

// CreateToken creates a token of role (fsm.RoleAdmin, fsm.RoleOperator
// or fsm.RoleReader; "" = operator); the answer carries the secret, shown
// once (admin).
func (c *Client) CreateToken(ctx context.Context, name, role string) (api.CreateTokenResponse, error) {
	return c.NewToken(ctx, api.CreateTokenRequest{Name: name, Role: role})
}

// NewToken creates the token req describes (a role, name prefixes); the
// answer carries the secret, shown once (admin).
func (c *Client) NewToken(ctx context.Context, req api.CreateTokenRequest) (api.CreateTokenResponse, error) {
	var out api.CreateTokenResponse
	return out, c.call(ctx, api.CreateToken, nil, req, &out)
}

// DeleteToken deletes a token by ID (admin).
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.call(ctx, api.DeleteToken, nil, nil, nil, id)
}

// Pools lists the storage pools.
func (c *Client) Pools(ctx context.Context) ([]fsm.Pool, error) {
	var out []fsm.Pool
	return out, c.call(ctx, api.ListPools, nil, nil, &out)
}

// CreatePool creates a pool with p.K data and p.M parity shards (admin).
func (c *Client) CreatePool(ctx context.Context, p fsm.PoolArgs) error {
	return c.call(ctx, api.CreatePool, nil, p, nil)
}

// DeletePool deletes an empty pool (admin).
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.call(ctx, api.DeletePool, nil, nil, nil, name)
}

// KVList lists the keys of namespace ns (admin).
func (c *Client) KVList(ctx context.Context, ns string) ([]api.KVEntry, error) {
	var out []api.KVEntry
	return out, c.call(ctx, api.ListKV, nil, nil, &out, ns)
}

// KVGet returns one key (admin).
func (c *Client) KVGet(ctx context.Context, ns, key string) (api.KVEntry, error) {
	var out api.KVEntry
	return out, c.call(ctx, api.GetKV, nil, nil, &out, ns, key)
}

// KVPut stores value under ns/key; a non-nil ifVersion makes it a
// compare-and-swap (0: the key must not exist). It returns the stored
// version (admin).
func (c *Client) KVPut(ctx context.Context, ns, key string, value []byte, ifVersion *uint64) (fsm.KV, error) {
	var q url.Values
	if ifVersion != nil {
		q = url.Values{"if_version": {strconv.FormatUint(*ifVersion, 10)}}
	}
	var out fsm.KV
	return out, c.call(ctx, api.PutKV, q, bytes.NewReader(value), &out, ns, key)
}

// KVDelete deletes ns/key (admin).
func (c *Client) KVDelete(ctx context.Context, ns, key string) error {
	return c.call(ctx, api.DeleteKV, nil, nil, nil, ns, key)
}

// JoinCSR is Join with a certificate request (PEM; "" for none): the
// answer then carries the node certificate and the cluster CA.
func (c *Client) JoinCSR(ctx context.Context, n fsm.Node, csr string) (api.JoinResponse, error) {
	var out api.JoinResponse
	return out, c.call(ctx, api.JoinNode, nil, api.JoinRequest{Node: n, CSR: csr}, &out)
}

// ClusterCA returns the cluster CA certificate (PEM).
func (c *Client) ClusterCA(ctx context.Context) ([]byte, error) {
	resp, err := c.Stream(ctx, "GET", "/api/v1/cluster/ca", nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

// RotateCerts asks every node to re-issue its certificate (admin).
func (c *Client) RotateCerts(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/cluster/rotate-certs", nil, nil)
}
