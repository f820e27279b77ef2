// Package flistmount adds the node agent's flist commands:
//
//	flist.mount {url, target, rw}   mount an flist at target (a FUSE mount, with a writable overlay when rw)
//	flist.unmount {target}
//
// url is REPO/NAME (an flist of this cluster's hub) or a hub URL
// (http://HOST:5000/REPO/NAME.flist). Every mount reads chunks through the
// node's one shared chunk cache (flist/cache). Mounts belong to the agent:
// Close unmounts them all.
//
//	fm := flistmount.Register(manager, flistmount.Config{Open: open, Cache: c})
//	defer fm.Close()
package flistmount
