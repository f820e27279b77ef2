package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// DefaultAddr is where the CLI looks for a node when ZOS_ADDR is unset.
const DefaultAddr = "https://127.0.0.1:5000"

// Client talks to one node's HTTP API with a bearer token.
type Client struct {
	Addr  string // base URL, e.g. http://127.0.0.1:5000
	Token string
	HTTP  *http.Client

	err error // set by FromEnv when $ZOS_CACERT is unusable
}

// New returns a client for addr ("host:port" or a URL).
func New(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{Addr: strings.TrimRight(addr, "/"), Token: token, HTTP: &http.Client{Transport: http.DefaultTransport}}
}

// NewTLS is New over TLS with tc (nil: New): an address without a
// scheme is https, and the client's transport uses tc.
func NewTLS(addr, token string, tc *tls.Config) *Client {
	if tc == nil {
		return New(addr, token)
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	return &Client{Addr: strings.TrimRight(addr, "/"), Token: token, HTTP: &http.Client{Transport: TLSTransport(tc)}}
}

// TLSTransport is an HTTP transport over tc.
func TLSTransport(tc *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tc
	return t
}

// FromEnv returns a client for $ZOS_ADDR (default DefaultAddr) with
// $ZOS_TOKEN.
//
// $ZOS_CACERT names a PEM file of CA certificates to trust (the cluster
// CA: `zos cluster ca > ca.pem`); without it, https addresses are checked
// against the system's roots. A file that cannot be read makes every
// request of the client fail with that error.
func FromEnv() *Client {
	addr := os.Getenv("ZOS_ADDR")
	if addr == "" {
		addr = DefaultAddr
	}
	tc, err := EnvTLS()
	if err != nil {
		c := New(addr, os.Getenv("ZOS_TOKEN"))
		c.err = err
		return c
	}
	return NewTLS(addr, os.Getenv("ZOS_TOKEN"), tc)
}

// Error is an error answer of the API: {"error": {"code", "message"}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("HTTP %d %s", e.Status, e.Code)
}

// IsCode reports whether err is an API error with that code (not_found,
// exists, invalid, conflict, leased, unauthorized, …).
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Do sends a JSON request (body may be nil, an io.Reader sent as is, or a
// value encoded as JSON) and decodes a JSON answer into out (unless nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.Stream(ctx, method, path, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Stream sends a request and returns the response for the caller to read
// (and close) when the status is 2xx; otherwise the API error. header adds
// request headers.
func (c *Client) Stream(ctx context.Context, method, path string, body any, header http.Header) (*http.Response, error) {
	if c.err != nil {
		return nil, c.err
	}
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
		ctype = "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		rd = bytes.NewReader(buf)
		ctype = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Addr+path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if ctype != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, reachError(c.Addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		env.Error.Status = resp.StatusCode
		return env.Error
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: msg}
}

// WaitReady polls /readyz until the node answers ready or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Addr+"/readyz", nil)
		resp, err := c.HTTP.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: %s not ready: %w", c.Addr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
