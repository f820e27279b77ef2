package client

import "github.com/zosproject/zos/flist/hub"

// Hub returns a client of the flist hub served by the same node, with the
// same token (and the hub client's own keep-alive transport): flists (list, inspect, upload, merge,
// delete, open) and chunks by Ref.
func (c *Client) Hub() *hub.Client {
	return hub.NewClient(c.Addr, c.Token)
}
