package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zosproject/zos/node/agent"
)

// Client is a connection pool to one agent.
type Client struct {
	R *redis.Client
}

// New connects to addr (host:port) with token.
func New(addr, token string) *Client {
	return &Client{R: redis.NewClient(&redis.Options{Addr: addr, Password: token, Protocol: 2,
		ReadTimeout: -1, DisableIdentity: true, PoolSize: 32})}
}

// Close closes the pool.
func (c *Client) Close() error { return c.R.Close() }

// NewID returns a random job id.
func NewID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Submit pushes cmd (an id is made when it has none) and returns its id.
func (c *Client) Submit(ctx context.Context, cmd agent.Command) (string, error) {
	if cmd.ID == "" {
		cmd.ID = NewID()
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return "", err
	}
	if err := c.R.RPush(ctx, agent.DefaultQueue, b).Err(); err != nil {
		return "", err
	}
	return cmd.ID, nil
}

// ErrNoResult: the wait ended before the job did.
var ErrNoResult = errors.New("agent client: no result yet")

// Result waits up to timeout for the result of job id.
func (c *Client) Result(ctx context.Context, id string, timeout time.Duration) (agent.JobResult, error) {
	var r agent.JobResult
	//lint:ignore SA1019 BRPOPLPUSH is 0-core's protocol (the agent has no BLMOVE)
	v, err := c.R.BRPopLPush(ctx, "result:"+id, "result:"+id, timeout).Result()
	if errors.Is(err, redis.Nil) {
		return r, fmt.Errorf("%w: job %s", ErrNoResult, id)
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return r, fmt.Errorf("agent client: result of %s: %w", id, err)
	}
	return r, nil
}

// Run submits cmd and waits for its result.
func (c *Client) Run(ctx context.Context, cmd agent.Command, timeout time.Duration) (agent.JobResult, error) {
	id, err := c.Submit(ctx, cmd)
	if err != nil {
		return agent.JobResult{}, err
	}
	return c.Result(ctx, id, timeout)
}

// Stream calls fn for every line of stream:<id> until the end-of-job
// message; it returns whether the job succeeded (flag 0x2).
func (c *Client) Stream(ctx context.Context, id string, fn func(level int, msg string)) (bool, error) {
	for {
		v, err := c.R.BLPop(ctx, 10*time.Second, "stream:"+id).Result()
		if errors.Is(err, redis.Nil) {
			// Quiet job, or it ended before streaming: check the flag.
			if ttl, err := c.R.TTL(ctx, "result:"+id+":flag").Result(); err == nil && ttl != -1 {
				n, _ := c.R.LLen(ctx, "stream:"+id).Result()
				if n == 0 {
					return false, nil
				}
			}
			continue
		}
		if err != nil {
			return false, err
		}
		var sm agent.StreamMessage
		if err := json.Unmarshal([]byte(v[1]), &sm); err != nil {
			return false, fmt.Errorf("agent client: stream of %s: %w", id, err)
		}
		if flags := sm.Message.Meta & 0xff; flags&0x6 != 0 {
			return flags&0x2 != 0, nil
		}
		fn(sm.Message.Meta>>16, sm.Message.Message)
	}
}

// ResultError is a job that did not succeed.
type ResultError struct{ R agent.JobResult }

func (e *ResultError) Error() string {
	return fmt.Sprintf("%s: %s (code %d): %s", e.R.Command, e.R.State, e.R.Code, e.R.Data)
}

// JSON runs a built-in command and decodes its level-20 answer into out.
func (c *Client) JSON(ctx context.Context, command string, args any, out any) error {
	var raw json.RawMessage
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		raw = b
	}
	r, err := c.Run(ctx, agent.Command{Command: command, Arguments: raw}, 5*time.Minute)
	if err != nil {
		return err
	}
	if r.State != agent.StateSuccess {
		return &ResultError{R: r}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal([]byte(r.Data), out)
}
