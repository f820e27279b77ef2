package hub

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
)

// OpenArg opens the flist a user names: a local flist file, "REPO/NAME"
// (published on c's hub) or an http(s) URL of any hub
// ("http://HOST:5000/REPO/NAME.flist"). It returns the Fetcher the
// flist's chunks come from: a client of the URL's hub (with c's token) for
// a URL, c otherwise.
func (c *Client) OpenArg(ctx context.Context, arg string) (*flist.Reader, chunkstore.Fetcher, error) {
	if strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "https://") {
		base, p, err := SplitURL(arg)
		if err != nil {
			return nil, nil, err
		}
		other := NewClient(base, c.Token)
		other.HTTP = c.HTTP
		r, err := other.Open(ctx, p)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", arg, err)
		}
		return r, other, nil
	}
	if st, err := os.Stat(arg); err == nil && !st.IsDir() {
		r, err := flist.OpenFile(arg)
		return r, c, err
	}
	if repo, name, err := SplitRepoName(arg); err == nil {
		r, err := c.Open(ctx, repo+"/"+name)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", arg, err)
		}
		return r, c, nil
	}
	return nil, nil, fmt.Errorf("%s: no such file, and not REPO/NAME or a URL", arg)
}

// SplitRepoName splits "REPO/NAME[.flist]" and checks both names.
func SplitRepoName(s string) (repo, name string, err error) {
	repo, name, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q: want REPO/NAME", ErrBadName, s)
	}
	name = TrimFlistName(name)
	if err := CheckName(repo); err != nil {
		return "", "", err
	}
	return repo, name, CheckName(name)
}

// UploadFlistFile registers the flist file at path as repo/name (see
// UploadFlist: its chunks must already be in the hub's store).
func (c *Client) UploadFlistFile(ctx context.Context, repo, name, path string) (UploadResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return UploadResult{}, err
	}
	return c.UploadFlist(ctx, repo, name, data)
}
