package client

import (
	"net/http"

	"github.com/zosproject/zos/flist/hub"
)

// Hub returns a client of the flist hub served by the same node, with the
// same token (and the hub client's own keep-alive transport): flists (list, inspect, upload, merge,
// delete, open) and chunks by Ref.
func (c *Client) Hub() *hub.Client {
	h := hub.NewClient(c.Addr, c.Token)
	if t, ok := c.HTTP.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		// The same trust (ZOS_CACERT) for the hub over HTTPS.
		t = t.Clone()
		t.MaxIdleConnsPerHost = 32
		h.HTTP = &http.Client{Transport: t}
	}
	return h
}
