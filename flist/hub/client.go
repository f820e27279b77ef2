package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
)

// Client talks to a hub. It is a chunkstore Fetcher, Receiver and Statter
// over HTTP (so flists can be built, pushed and mounted through any node),
// and wraps the flist API. Safe for concurrent use.
type Client struct {
	// Base is the hub's URL, e.g. "http://127.0.0.1:5000".
	Base string
	// Token is sent as "Authorization: Bearer" for writes.
	Token string
	// HTTP defaults to a client with keep-alive and no overall timeout
	// (callers bound requests with contexts).
	HTTP *http.Client
}

var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:               http.ProxyFromEnvironment,
	MaxIdleConnsPerHost: 32,
	IdleConnTimeout:     90 * time.Second,
}}

// NewClient returns a client for the hub at base.
func NewClient(base, token string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: token}
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

func (c *Client) url(p string) string { return strings.TrimRight(c.Base, "/") + p }

func (c *Client) do(ctx context.Context, method, p string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(p), body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", chunkstore.ErrUnavailable, err)
	}
	return resp, nil
}

// apiError turns an error response into an error wrapping the matching
// sentinel.
func apiError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(body))
	var env envelope
	if json.Unmarshal(body, &env) == nil && env.Message != "" {
		msg = env.Message
	}
	var kind error
	switch {
	case resp.StatusCode == http.StatusNotFound:
		kind = ErrNotFound
	case resp.StatusCode == http.StatusUnauthorized:
		kind = ErrUnauthorized
	case resp.StatusCode == http.StatusForbidden:
		kind = ErrForbidden
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		kind = chunkstore.ErrTooLarge
	case resp.StatusCode >= 500:
		kind = chunkstore.ErrUnavailable
	default:
		kind = errors.New("hub: request refused")
	}
	msg = strings.TrimPrefix(msg, kind.Error()+": ")
	return fmt.Errorf("%w: %s (HTTP %d)", kind, msg, resp.StatusCode)
}

// Fetch implements chunkstore.Fetcher; the content is verified against
// ref.
func (c *Client) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	resp, err := c.do(ctx, GetChunkRoute.Method, GetChunkRoute.URL(ref.String()), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%w: %s", chunkstore.ErrNotFound, ref.Short())
	}
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, chunkstore.MaxChunkSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", chunkstore.ErrUnavailable, err)
	}
	if chunkstore.Sum(data) != ref {
		return nil, fmt.Errorf("%w: chunk %s from %s does not match its ref", chunkstore.ErrCorrupt, ref.Short(), c.Base)
	}
	return data, nil
}

// Stat implements chunkstore.Statter.
func (c *Client) Stat(ctx context.Context, ref chunkstore.Ref) (chunkstore.Info, error) {
	resp, err := c.do(ctx, http.MethodHead, GetChunkRoute.URL(ref.String()), nil, nil)
	if err != nil {
		return chunkstore.Info{}, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return chunkstore.Info{Ref: ref, Size: resp.ContentLength}, nil
	case http.StatusNotFound:
		return chunkstore.Info{}, fmt.Errorf("%w: %s", chunkstore.ErrNotFound, ref.Short())
	}
	return chunkstore.Info{}, apiError(resp)
}

// Put implements chunkstore.Receiver. A chunk the hub already has is not
// sent again.
func (c *Client) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	if len(data) > chunkstore.MaxChunkSize {
		return chunkstore.Ref{}, chunkstore.ErrTooLarge
	}
	ref := chunkstore.Sum(data)
	if _, err := c.Stat(ctx, ref); err == nil {
		return ref, nil
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}, "X-Zos-Ref": {ref.String()}}
	resp, err := c.do(ctx, PutChunkRoute.Method, PutChunkRoute.URL(), bytes.NewReader(data), hdr)
	if err != nil {
		return chunkstore.Ref{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return chunkstore.Ref{}, apiError(resp)
	}
	var out struct {
		Ref chunkstore.Ref `json:"ref"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return chunkstore.Ref{}, fmt.Errorf("%w: %v", chunkstore.ErrUnavailable, err)
	}
	if out.Ref != ref {
		return chunkstore.Ref{}, fmt.Errorf("%w: hub stored %s, expected %s", chunkstore.ErrCorrupt, out.Ref.Short(), ref.Short())
	}
	return ref, nil
}

// Missing returns which of refs the hub's store does not have.
func (c *Client) Missing(ctx context.Context, refs []chunkstore.Ref) ([]chunkstore.Ref, error) {
	var out missingResponse
	err := c.postJSON(ctx, MissingChunkRoute.URL(), missingRequest{Refs: refs}, &out)
	return out.Missing, err
}

func (c *Client) postJSON(ctx context.Context, p string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, p, bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return apiError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// getPayload GETs an API path and decodes the envelope's payload.
func (c *Client) call(ctx context.Context, method, p string, body io.Reader, hdr http.Header, out any) error {
	resp, err := c.do(ctx, method, p, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return apiError(resp)
	}
	env := envelope{Payload: out}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("hub: bad response: %w", err)
	}
	return nil
}

// ListRepos lists repositories.
func (c *Client) ListRepos(ctx context.Context) ([]string, error) {
	var out []string
	return out, c.call(ctx, ListReposRoute.Method, ListReposRoute.URL(), nil, nil, &out)
}

// List lists a repository's flists.
func (c *Client) List(ctx context.Context, repo string) ([]Entry, error) {
	var out []Entry
	return out, c.call(ctx, ListRoute.Method, ListRoute.URL(repo), nil, nil, &out)
}

// Inspect returns an flist's entry and metadata.
func (c *Client) Inspect(ctx context.Context, repo, name string) (Inspection, error) {
	var out Inspection
	return out, c.call(ctx, InspectRoute.Method, InspectRoute.URL(repo, TrimFlistName(name)), nil, nil, &out)
}

// Delete deletes repo/name ("me" or "" for the token's own repository).
func (c *Client) Delete(ctx context.Context, repo, name string) error {
	if repo == "" {
		repo = "me"
	}
	var out map[string]string
	return c.call(ctx, DeleteRoute.Method, DeleteRoute.URL(repo, TrimFlistName(name)), nil, nil, &out)
}

// Merge merges sources ("repo/name.flist") into target in the token's
// repository (or repo, for admins).
func (c *Client) Merge(ctx context.Context, repo, target string, sources []string) (UploadResult, error) {
	b, _ := json.Marshal(sources)
	var out UploadResult
	return out, c.call(ctx, MergeRoute.Method, MergeRoute.URL(TrimFlistName(target))+repoQuery(repo, "?"),
		bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}}, &out)
}

func repoQuery(repo, sep string) string {
	if repo == "" || repo == "me" {
		return ""
	}
	return sep + "repo=" + url.QueryEscape(repo)
}

// UploadArchive sends an archive (tar, tar.gz, tar.zst, docker save, OCI
// archive) to be converted into repo/name (repo "" = the token's own) as a
// multipart "file" field, as 0-hub clients do.
func (c *Client) UploadArchive(ctx context.Context, repo, name, filename string, r io.Reader) (UploadResult, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", filename)
		if err == nil {
			_, err = io.Copy(part, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	q := "?name=" + url.QueryEscape(TrimFlistName(name)) + repoQuery(repo, "&")
	var out UploadResult
	err := c.call(ctx, UploadRoute.Method, UploadRoute.URL()+q, pr, http.Header{"Content-Type": {mw.FormDataContentType()}}, &out)
	pr.CloseWithError(io.ErrClosedPipe)
	return out, err
}

// UploadFlist registers an already built flist file as repo/name; its
// chunks must already be in the hub's store (see Push).
func (c *Client) UploadFlist(ctx context.Context, repo, name string, data []byte) (UploadResult, error) {
	q := "?name=" + url.QueryEscape(TrimFlistName(name)) + repoQuery(repo, "&")
	var out UploadResult
	err := c.call(ctx, UploadFlistRoute.Method, UploadFlistRoute.URL()+q, bytes.NewReader(data), http.Header{"Content-Type": {"application/octet-stream"}}, &out)
	return out, err
}

// Download returns the bytes of a published flist file, given as
// "repo/name[.flist]" or a full http(s) URL.
func (c *Client) Download(ctx context.Context, flistPath string) ([]byte, error) {
	u := c.flistURL(flistPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", chunkstore.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(resp)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxFlistFile))
}

func (c *Client) flistURL(p string) string {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		return p
	}
	p = strings.TrimPrefix(p, "/")
	if !strings.HasSuffix(p, ".flist") {
		p += ".flist"
	}
	return c.url("/" + p)
}

// Open downloads a published flist file ("repo/name" or URL) and opens it
// (validated).
func (c *Client) Open(ctx context.Context, flistPath string) (*flist.Reader, error) {
	data, err := c.Download(ctx, flistPath)
	if err != nil {
		return nil, err
	}
	return flist.Open(ctx, bytes.NewReader(data), int64(len(data)), nil)
}

// SplitURL splits "http://host:port/repo/name.flist" into the hub's base
// URL and "repo/name.flist".
func SplitURL(u string) (base, flistPath string, err error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return "", "", fmt.Errorf("hub: %q is not an http(s) URL", u)
	}
	p := strings.TrimPrefix(pu.Path, "/")
	if strings.Count(p, "/") != 1 || !strings.HasSuffix(p, ".flist") {
		return "", "", fmt.Errorf("hub: %q is not a .../REPO/NAME.flist URL", u)
	}
	return pu.Scheme + "://" + pu.Host, p, nil
}

// Push stores every chunk of an flist held by src into the hub (those it
// lacks), in parallel. It returns the number of chunks and bytes sent.
func (c *Client) Push(ctx context.Context, fr *flist.Reader, src chunkstore.Fetcher, parallel int, progress func(done, total int)) (int, int64, error) {
	var refs []flist.Chunk
	seen := map[chunkstore.Ref]bool{}
	err := fr.Walk(func(e flist.Entry) error {
		if !e.IsRegular() {
			return nil
		}
		cs, err := fr.Chunks(e.Ino)
		for _, ch := range cs {
			if !seen[ch.Ref] {
				seen[ch.Ref] = true
				refs = append(refs, ch)
			}
		}
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	var missing []flist.Chunk
	for i := 0; i < len(refs); i += 10000 {
		batch := refs[i:min(len(refs), i+10000)]
		rs := make([]chunkstore.Ref, len(batch))
		for j, ch := range batch {
			rs[j] = ch.Ref
		}
		m, err := c.Missing(ctx, rs)
		if err != nil {
			return 0, 0, err
		}
		miss := map[chunkstore.Ref]bool{}
		for _, r := range m {
			miss[r] = true
		}
		for _, ch := range batch {
			if miss[ch.Ref] {
				missing = append(missing, ch)
			}
		}
	}
	parallel = max(parallel, 1)
	var (
		mu    sync.Mutex
		sent  int
		bytes int64
		first error
		wg    sync.WaitGroup
		next  = make(chan flist.Chunk)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range next {
				data, err := flist.FetchChunk(ctx, src, ch)
				if err == nil {
					_, err = c.Put(ctx, data)
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				if err == nil {
					sent++
					bytes += int64(len(data))
				}
				done := sent
				mu.Unlock()
				if progress != nil && err == nil {
					progress(done, len(missing))
				}
			}
		}()
	}
	for _, ch := range missing {
		select {
		case next <- ch:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return sent, bytes, first
	}
	return sent, bytes, ctx.Err()
}
