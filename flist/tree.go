package flist

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// Node is one inode of an in-memory Tree. Hard links are several directory
// entries holding the same *Node. Ino and Nlink are computed when the tree is
// written.
type Node struct {
	Inode
	Chunks   []Chunk          // regular files: ordered, contiguous from offset 0
	children map[string]*Node // directories
}

// NewDir returns a directory node.
func NewDir(perm uint32, uid, gid uint32, mtime time.Time) *Node {
	return &Node{Inode: Inode{Mode: TypeDir | perm&PermMask, UID: uid, GID: gid, Mtime: mtime, Atime: mtime, Ctime: mtime}}
}

// Child returns the named child of a directory node.
func (n *Node) Child(name string) *Node { return n.children[name] }

// Names returns the names of a directory node's children, sorted.
func (n *Node) Names() []string {
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Tree is a mutable in-memory flist: what builders produce and Merge works
// on. Write turns it into the immutable file. A Tree is not safe for
// concurrent use.
type Tree struct {
	Root *Node
	Meta Meta
}

// NewTree returns a tree holding an empty root directory (0755 root:root).
func NewTree() *Tree {
	return &Tree{Root: NewDir(0o755, 0, 0, time.Unix(0, 0).UTC())}
}

// Lookup returns the node at the given path components (nil components: the
// root). Symlinks are never followed.
func (t *Tree) Lookup(parts []string) (*Node, error) {
	n := t.Root
	for i, p := range parts {
		if !n.IsDir() {
			return nil, fmt.Errorf("%w: %s", ErrNotDir, strings.Join(parts[:i], "/"))
		}
		c := n.children[p]
		if c == nil {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, strings.Join(parts[:i+1], "/"))
		}
		n = c
	}
	return n, nil
}

// parentOf returns the directory that holds parts, creating missing
// directories (0755 root:root) when create is set. It never follows
// symlinks: a non-directory on the way is ErrNotDir.
func (t *Tree) parentOf(parts []string, create bool) (*Node, error) {
	n := t.Root
	for i, p := range parts[:len(parts)-1] {
		c := n.children[p]
		if c == nil {
			if !create {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, strings.Join(parts[:i+1], "/"))
			}
			c = NewDir(0o755, 0, 0, n.Mtime)
			if n.children == nil {
				n.children = map[string]*Node{}
			}
			n.children[p] = c
		}
		if !c.IsDir() {
			return nil, fmt.Errorf("%w: %s is a %s, not a directory (symlinks are never followed)",
				ErrNotDir, strings.Join(parts[:i+1], "/"), TypeName(c.Mode))
		}
		n = c
	}
	return n, nil
}

// Put places node at the path, creating missing parent directories. An
// existing non-directory there is replaced; a directory put onto an existing
// directory takes the new attributes and keeps the old children (tar and
// layer semantics) unless the new node has children of its own. Putting
// the root (no parts) replaces the root's attributes. Putting an existing
// non-directory *Node again at another path makes a hard link; callers must
// not link directories.
func (t *Tree) Put(parts []string, node *Node) error {
	if len(parts) == 0 {
		if !node.IsDir() {
			return fmt.Errorf("%w: the root must be a directory", ErrNotDir)
		}
		node.children = t.Root.children
		t.Root = node
		return nil
	}
	for _, p := range parts {
		if err := CheckName(p); err != nil {
			return err
		}
	}
	dir, err := t.parentOf(parts, true)
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	old := dir.children[name]
	if old == node {
		return nil
	}
	if node.IsDir() && node.children == nil && old != nil && old.IsDir() {
		node.children = old.children
	}
	if dir.children == nil {
		dir.children = map[string]*Node{}
	}
	dir.children[name] = node
	return nil
}

// Remove deletes the entry at the path (with everything below it) and
// reports whether it existed.
func (t *Tree) Remove(parts []string) bool {
	if len(parts) == 0 {
		return false
	}
	dir, err := t.parentOf(parts, false)
	if err != nil {
		return false
	}
	name := parts[len(parts)-1]
	if _, ok := dir.children[name]; !ok {
		return false
	}
	delete(dir.children, name)
	return true
}

// Clear removes every child of the directory at the path (an opaque
// whiteout) and reports whether it was a directory.
func (t *Tree) Clear(parts []string, keep func(name string) bool) bool {
	n, err := t.Lookup(parts)
	if err != nil || !n.IsDir() {
		return false
	}
	for name := range n.children {
		if keep == nil || !keep(name) {
			delete(n.children, name)
		}
	}
	return true
}

// Walk calls fn for every entry, depth first in name order, with its
// slash-separated path ("" for the root). A hard-linked node is visited once
// per name. Returning SkipDir from fn for a directory skips its children.
func (t *Tree) Walk(fn func(path string, n *Node) error) error {
	return walkNode("", t.Root, fn)
}

// SkipDir is returned by Walk callbacks to skip a directory's children
// (named like filepath.SkipDir).
//
//lint:ignore ST1012 mirrors filepath.SkipDir
var SkipDir = fmt.Errorf("flist: skip directory")

func walkNode(path string, n *Node, fn func(string, *Node) error) error {
	if err := fn(path, n); err != nil {
		if err == SkipDir {
			return nil
		}
		return err
	}
	if !n.IsDir() {
		return nil
	}
	for _, name := range n.Names() {
		p := name
		if path != "" {
			p = path + "/" + name
		}
		if err := walkNode(p, n.children[name], fn); err != nil {
			return err
		}
	}
	return nil
}

// number assigns inode numbers and link counts, and returns the nodes
// indexed by Ino-1 together with the stats.
func (t *Tree) number() ([]*Node, Stats) {
	var nodes []*Node
	seen := map[*Node]bool{}
	links := map[*Node]uint32{}
	var st Stats
	uniq := map[chunkstore.Ref]bool{}
	var visit func(n *Node)
	visit = func(n *Node) {
		links[n]++
		if seen[n] {
			st.HardLinks++
			return
		}
		seen[n] = true
		nodes = append(nodes, n)
		n.Ino = Ino(len(nodes))
		switch n.Type() {
		case TypeDir:
			st.Dirs++
			sub := uint32(0)
			for _, name := range n.Names() {
				c := n.children[name]
				if c.IsDir() {
					sub++
				}
				visit(c)
			}
			n.Nlink = 2 + sub
		case TypeReg:
			st.Files++
			st.Bytes += n.Size
			for _, c := range n.Chunks {
				st.Chunks++
				if !uniq[c.Ref] {
					uniq[c.Ref] = true
					st.UniqueChunks++
					st.UniqueBytes += int64(c.Size)
				}
			}
		case TypeSymlink:
			st.Symlinks++
		case TypeChar, TypeBlock:
			st.Devices++
		default:
			st.Others++
		}
	}
	visit(t.Root)
	for _, n := range nodes {
		if !n.IsDir() {
			n.Nlink = links[n]
		}
	}
	st.Inodes = uint64(len(nodes))
	return nodes, st
}
