package tree

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/internal/refcache"
	"github.com/zosproject/zos/chunkstore"
)

// Store is what a Tree needs from the chunk store.
type Store interface {
	chunkstore.Fetcher
	chunkstore.Receiver
}

// Defaults and limits.
const (
	// DefaultFanout is the number of slots per node; see blockd's doc.go
	// for the benchmark that chose it.
	DefaultFanout = 256
	// MinFanout and MaxFanout bound Config.Fanout (a power of two).
	MinFanout = 16
	MaxFanout = 4096
	// DefaultParallelism bounds concurrent node fetches and puts of one
	// operation.
	DefaultParallelism = 16
)

// Errors.
var (
	// ErrBadNode: a chunk that should be a tree node is not a well-formed
	// one (wrong format, fanout or level). The chunk passed its Ref check,
	// so this is a bug or a Ref that does not name a tree.
	ErrBadNode = errors.New("tree: malformed node")
	// ErrUnsorted: Update's changes are not in strictly ascending order.
	ErrUnsorted = errors.New("tree: changes not in strictly ascending index order")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("tree: invalid config")
	// ErrBadEntry: a Change whose Entry cannot be stored (extent fields
	// without a block, or a slot outside its extent).
	ErrBadEntry = errors.New("tree: malformed entry")
)

// Config configures a Tree.
type Config struct {
	// Fanout is the number of slots per node, a power of two from
	// MinFanout to MaxFanout; 0 means DefaultFanout. Every tree read by
	// one Tree must have been written with the same fanout.
	Fanout int
	// Cache holds validated nodes by Ref; nil disables caching. It may be
	// shared by many Trees of the same fanout.
	Cache *refcache.Cache
	// Parallelism bounds concurrent fetches and puts; 0 means
	// DefaultParallelism.
	Parallelism int
}

// Validate checks c (zero fields mean defaults).
func (c Config) Validate() error {
	if c.Fanout != 0 && (c.Fanout < MinFanout || c.Fanout > MaxFanout || c.Fanout&(c.Fanout-1) != 0) {
		return fmt.Errorf("%w: fanout %d is not a power of two in [%d, %d]", ErrConfig, c.Fanout, MinFanout, MaxFanout)
	}
	if c.Parallelism < 0 {
		return fmt.Errorf("%w: negative parallelism", ErrConfig)
	}
	return nil
}

// Tree reads and writes block trees in a chunk store. It holds no tree
// state of its own (a tree is named by its root Ref), so one Tree serves
// any number of roots and is safe for concurrent use.
type Tree struct {
	s        Store
	shift    uint
	fanout   int
	mask     uint64
	maxLevel int
	cache    *refcache.Cache
	par      int
}

// New returns a Tree over s.
func New(s Store, cfg Config) (*Tree, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Fanout == 0 {
		cfg.Fanout = DefaultFanout
	}
	if cfg.Parallelism == 0 {
		cfg.Parallelism = DefaultParallelism
	}
	shift := uint(bits.TrailingZeros(uint(cfg.Fanout)))
	return &Tree{
		s: s, shift: shift, fanout: cfg.Fanout, mask: uint64(cfg.Fanout - 1),
		maxLevel: int((64+shift-1)/shift) - 1,
		cache:    cfg.Cache, par: cfg.Parallelism,
	}, nil
}

// Fanout returns the number of slots per node.
func (t *Tree) Fanout() int { return t.fanout }

// Change sets the block at Index to Entry; the zero Entry removes it.
type Change struct {
	Index uint64
	Entry
}

// spanBits is log2 of the number of indices a node of level covers; 64 or
// more means the whole index space.
func (t *Tree) spanBits(level int) uint { return t.shift * uint(level+1) }

// covers reports whether a node of level at base covers idx.
func (t *Tree) covers(level int, base, idx uint64) bool {
	sb := t.spanBits(level)
	if sb >= 64 {
		return idx >= base
	}
	return idx >= base && idx-base < 1<<sb
}

// levelFor is the smallest level whose node at base 0 covers idx.
func (t *Tree) levelFor(idx uint64) int {
	l := 0
	for t.spanBits(l) < 64 && idx>>t.spanBits(l) != 0 {
		l++
	}
	return l
}

// slotOf is idx's slot in a node of level.
func (t *Tree) slotOf(level int, idx uint64) int {
	return int((idx >> (t.shift * uint(level))) & t.mask)
}

// childBase is the first index of slot in a node of level at base.
func (t *Tree) childBase(level int, base uint64, slot int) uint64 {
	return base + uint64(slot)<<(t.shift*uint(level))
}

func (t *Tree) fetchNode(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	b, err := t.s.Fetch(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("tree: node %s: %w", ref.Short(), err)
	}
	if _, err := validate(b, t.shift, t.maxLevel); err != nil {
		return nil, fmt.Errorf("node %s: %w", ref.Short(), err)
	}
	return b, nil
}

// load returns the node named ref.
func (t *Tree) load(ctx context.Context, ref chunkstore.Ref) (node, error) {
	b, err := t.cache.Get(ctx, ref, t.fetchNode)
	if err != nil {
		return nil, err
	}
	return node(b), nil
}

// loadLevel loads ref and checks it has the level its parent implies.
func (t *Tree) loadLevel(ctx context.Context, ref chunkstore.Ref, level int) (node, error) {
	n, err := t.load(ctx, ref)
	if err != nil {
		return nil, err
	}
	if n.level() != level {
		return nil, fmt.Errorf("%w: node %s has level %d, its parent implies %d", ErrBadNode, ref.Short(), n.level(), level)
	}
	return n, nil
}

// Level returns the level of root's node (0 for a tree of one leaf) or -1
// for the empty tree.
func (t *Tree) Level(ctx context.Context, root chunkstore.Ref) (int, error) {
	if root.IsZero() {
		return -1, nil
	}
	n, err := t.load(ctx, root)
	if err != nil {
		return 0, err
	}
	return n.level(), nil
}

// rootLevel loads root into m and returns its level (-1 when empty).
func (t *Tree) rootLevel(ctx context.Context, root chunkstore.Ref, m map[chunkstore.Ref]node) (int, error) {
	if root.IsZero() {
		return -1, nil
	}
	if n, ok := m[root]; ok {
		return n.level(), nil
	}
	n, err := t.load(ctx, root)
	if err != nil {
		return 0, err
	}
	m[root] = n
	return n.level(), nil
}

// Lookup returns the Entry stored at idx, or the zero Entry when absent.
func (t *Tree) Lookup(ctx context.Context, root chunkstore.Ref, idx uint64) (Entry, error) {
	if root.IsZero() {
		return Entry{}, nil
	}
	n, err := t.load(ctx, root)
	if err != nil {
		return Entry{}, err
	}
	l := n.level()
	if !t.covers(l, 0, idx) {
		return Entry{}, nil
	}
	for {
		if l == 0 {
			return n.entry(t.fanout, t.slotOf(0, idx)), nil
		}
		c := n.child(t.fanout, t.slotOf(l, idx))
		if c.IsZero() {
			return Entry{}, nil
		}
		l--
		if n, err = t.loadLevel(ctx, c, l); err != nil {
			return Entry{}, err
		}
	}
}

// LookupCached is Lookup from the node cache alone: ok is false when a
// node on the path is not cached (nothing is fetched, so it never blocks on
// the store).
func (t *Tree) LookupCached(root chunkstore.Ref, idx uint64) (e Entry, ok bool) {
	if root.IsZero() {
		return Entry{}, true
	}
	b, ok := t.cache.Peek(root)
	if !ok {
		return Entry{}, false
	}
	n := node(b)
	l := n.level()
	if !t.covers(l, 0, idx) {
		return Entry{}, true
	}
	for {
		if l == 0 {
			return n.entry(t.fanout, t.slotOf(0, idx)), true
		}
		c := n.child(t.fanout, t.slotOf(l, idx))
		if c.IsZero() {
			return Entry{}, true
		}
		if b, ok = t.cache.Peek(c); !ok {
			return Entry{}, false
		}
		l--
		if n = node(b); n.level() != l {
			return Entry{}, false // Lookup reports the bad node
		}
	}
}

// parallel runs fn for 0..n-1, at most par at once.
func parallel(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	return par.Do(ctx, n, limit, fn)
}

// prefetch loads refs (non-zero, levels as given) in parallel into m.
func (t *Tree) prefetch(ctx context.Context, refs []chunkstore.Ref, level int, m map[chunkstore.Ref]node) error {
	var todo []chunkstore.Ref
	for _, r := range refs {
		if r.IsZero() {
			continue
		}
		if _, ok := m[r]; ok {
			continue
		}
		if b, ok := t.cache.Peek(r); ok {
			m[r] = node(b)
			continue
		}
		todo = append(todo, r)
	}
	if len(todo) == 0 {
		return nil
	}
	got := make([]node, len(todo))
	err := parallel(ctx, len(todo), t.par, func(ctx context.Context, i int) error {
		n, err := t.load(ctx, todo[i])
		got[i] = n
		return err
	})
	if err != nil {
		return err
	}
	for i, r := range todo {
		if got[i].level() != level {
			return fmt.Errorf("%w: node %s has level %d, its parent implies %d", ErrBadNode, r.Short(), got[i].level(), level)
		}
		m[r] = got[i]
	}
	return nil
}

// view is a node seen at a level: a real node of that level, an empty
// node, or a "lifted" Ref of a lower level that stands as slot 0 (trees of
// different heights are compared and grown this way).
type view struct {
	n      node
	lifted chunkstore.Ref
	llevel int
}

func (t *Tree) viewOf(ctx context.Context, ref chunkstore.Ref, realLevel, level int, m map[chunkstore.Ref]node) (view, error) {
	switch {
	case ref.IsZero():
		return view{}, nil
	case realLevel < level:
		return view{lifted: ref, llevel: realLevel}, nil
	}
	if n, ok := m[ref]; ok {
		return view{n: n}, nil
	}
	n, err := t.loadLevel(ctx, ref, level)
	if err != nil {
		return view{}, err
	}
	return view{n: n}, nil
}

// child returns slot's Ref and its real level (level-1 for a real node).
func (t *Tree) vchild(v view, level, slot int) (chunkstore.Ref, int) {
	if v.n != nil {
		return v.n.child(t.fanout, slot), level - 1
	}
	if slot == 0 && !v.lifted.IsZero() {
		return v.lifted, v.llevel
	}
	return chunkstore.Ref{}, level - 1
}

// slots lists the present slots of v in ascending order into dst.
func (t *Tree) vslots(v view, dst []int) []int {
	dst = dst[:0]
	if v.n != nil {
		v.n.each(t.fanout, func(slot int, _ chunkstore.Ref) bool {
			dst = append(dst, slot)
			return true
		})
	} else if !v.lifted.IsZero() {
		dst = append(dst, 0)
	}
	return dst
}

// writer collects the nodes the operations of a Batch create. New nodes
// are also entered in old, where every step looks first, so a later
// operation of the batch builds on an earlier one's nodes before any is
// stored.
type writer struct {
	t   *Tree
	new map[chunkstore.Ref][]byte
	old map[chunkstore.Ref]node // nodes loaded or made during the batch
}

func (t *Tree) newWriter() *writer {
	return &writer{t: t, new: map[chunkstore.Ref][]byte{}, old: map[chunkstore.Ref]node{}}
}

func (w *writer) add(level int, slots []chunkstore.Ref) chunkstore.Ref {
	return w.addNode(encode(w.t.shift, level, slots))
}

// addLeaf is add for a leaf's dense entries.
func (w *writer) addLeaf(slots []Entry) chunkstore.Ref {
	return w.addNode(encodeLeaf(w.t.shift, slots))
}

// addNode enters the encoded node b (nil: the empty node, the zero Ref).
func (w *writer) addNode(b []byte) chunkstore.Ref {
	if b == nil {
		return chunkstore.Ref{}
	}
	r := chunkstore.Sum(b)
	w.new[r] = b
	w.old[r] = node(b)
	return r
}

func (w *writer) node(ctx context.Context, ref chunkstore.Ref) (node, error) {
	if n, ok := w.old[ref]; ok {
		return n, nil
	}
	return w.t.load(ctx, ref)
}

// Batch applies several operations to a tree in memory; Stage then gives
// the resulting root and the new nodes it needs, which the caller stores
// (Tree.Store) together with other chunks in one round of puts. A Batch is
// not safe for concurrent use.
type Batch struct {
	t    *Tree
	w    *writer
	root chunkstore.Ref
}

// NewBatch starts a batch of operations on the tree at root.
func (t *Tree) NewBatch(root chunkstore.Ref) *Batch {
	return &Batch{t: t, w: t.newWriter(), root: root}
}

// Root returns the (not necessarily canonical) root after the operations
// so far.
func (b *Batch) Root() chunkstore.Ref { return b.root }

// Update applies changes (strictly ascending by Index); see Tree.Update.
func (b *Batch) Update(ctx context.Context, changes []Change) error {
	for i := 1; i < len(changes); i++ {
		if changes[i].Index <= changes[i-1].Index {
			return fmt.Errorf("%w: %d after %d", ErrUnsorted, changes[i].Index, changes[i-1].Index)
		}
	}
	for _, c := range changes {
		if err := c.check(); err != nil {
			return fmt.Errorf("index %d: %w", c.Index, err)
		}
	}
	if len(changes) == 0 {
		return nil
	}
	t, w := b.t, b.w
	rl, err := t.rootLevel(ctx, b.root, w.old)
	if err != nil {
		return err
	}
	level := max(rl, t.levelFor(changes[len(changes)-1].Index))
	nr, err := t.update(ctx, w, b.root, rl, level, 0, changes)
	if err != nil {
		return err
	}
	b.root = nr
	return nil
}

// Punch removes every index in [from, to); see Tree.Punch.
func (b *Batch) Punch(ctx context.Context, from, to uint64) error {
	if to <= from {
		return nil
	}
	return b.punch(ctx, from, to-1)
}

func (b *Batch) punch(ctx context.Context, lo, hi uint64) error {
	t, w := b.t, b.w
	rl, err := t.rootLevel(ctx, b.root, w.old)
	if err != nil || rl < 0 {
		return err
	}
	nr, err := t.punchNode(ctx, w, b.root, rl, 0, lo, hi)
	if err != nil {
		return err
	}
	b.root = nr
	return nil
}

// Staged is a tree built in memory: its canonical root and the nodes not
// yet stored that the root needs.
type Staged struct {
	Root  chunkstore.Ref
	Nodes map[chunkstore.Ref][]byte
}

// Stage makes the root canonical (the smallest height: a root whose only
// entry is slot 0 is replaced by that child) and collects the new nodes
// reachable from it (nodes made and then replaced within the batch are
// left out). The Batch may go on after Stage.
func (b *Batch) Stage(ctx context.Context) (*Staged, error) {
	w := b.w
	root := b.root
	for !root.IsZero() {
		n, err := w.node(ctx, root)
		if err != nil {
			return nil, err
		}
		if n.level() == 0 || n.count(w.t.fanout) != 1 || !n.has(w.t.fanout, 0) {
			break
		}
		root = n.child(w.t.fanout, 0)
	}
	st := &Staged{Root: root, Nodes: map[chunkstore.Ref][]byte{}}
	var visit func(r chunkstore.Ref)
	visit = func(r chunkstore.Ref) {
		data, ok := w.new[r]
		if !ok {
			return // stored before the batch
		}
		if _, seen := st.Nodes[r]; seen {
			return
		}
		st.Nodes[r] = data
		if n := node(data); n.level() > 0 {
			n.each(w.t.fanout, func(_ int, c chunkstore.Ref) bool {
				visit(c)
				return true
			})
		}
	}
	visit(root)
	return st, nil
}

// Store puts the staged nodes in parallel and caches them.
func (t *Tree) Store(ctx context.Context, st *Staged) error {
	refs := make([]chunkstore.Ref, 0, len(st.Nodes))
	for r := range st.Nodes {
		refs = append(refs, r)
	}
	err := parallel(ctx, len(refs), t.par, func(ctx context.Context, i int) error {
		return t.PutNode(ctx, refs[i], st.Nodes[refs[i]])
	})
	return err
}

// PutNode stores one staged node (named ref) and caches it.
func (t *Tree) PutNode(ctx context.Context, ref chunkstore.Ref, data []byte) error {
	got, err := t.s.Put(ctx, data)
	if err != nil {
		return fmt.Errorf("tree: store node: %w", err)
	}
	if got != ref {
		return fmt.Errorf("tree: store returned ref %s for node %s", got.Short(), ref.Short())
	}
	t.cache.Add(ref, data)
	return nil
}

// CacheNode caches a staged node (named ref) that the caller stored
// itself, e.g. in a batch with other chunks.
func (t *Tree) CacheNode(ref chunkstore.Ref, data []byte) { t.cache.Add(ref, data) }

// commit stages b and stores its nodes.
func (b *Batch) commit(ctx context.Context) (chunkstore.Ref, error) {
	st, err := b.Stage(ctx)
	if err != nil {
		return chunkstore.Ref{}, err
	}
	if err := b.t.Store(ctx, st); err != nil {
		return chunkstore.Ref{}, err
	}
	return st.Root, nil
}

// Update applies changes (strictly ascending by Index) to the tree at root
// and returns the new root. Only the nodes on paths to changed indices are
// written (path copying); the old tree stays intact, so snapshots of it
// remain valid. Node fetches and puts run in parallel.
func (t *Tree) Update(ctx context.Context, root chunkstore.Ref, changes []Change) (chunkstore.Ref, error) {
	b := t.NewBatch(root)
	if err := b.Update(ctx, changes); err != nil {
		return chunkstore.Ref{}, err
	}
	if b.root == root {
		return root, nil
	}
	return b.commit(ctx)
}

func (t *Tree) update(ctx context.Context, w *writer, ref chunkstore.Ref, realLevel, level int, base uint64, changes []Change) (chunkstore.Ref, error) {
	v, err := t.viewOf(ctx, ref, realLevel, level, w.old)
	if err != nil {
		return chunkstore.Ref{}, err
	}
	if level == 0 {
		lp := scratchEntries(t.fanout)
		defer putScratch(&entryScratch, lp)
		leaf := *lp
		if v.n != nil {
			v.n.expandEntries(t.fanout, leaf)
		}
		for _, c := range changes {
			leaf[t.slotOf(0, c.Index)] = c.Entry
		}
		return w.addLeaf(leaf), nil
	}
	sp := scratchRefs(t.fanout)
	defer putScratch(&refScratch, sp)
	slots := *sp
	if v.n != nil {
		v.n.expand(t.fanout, slots)
	} else if !v.lifted.IsZero() {
		slots[0] = v.lifted
	}
	// Group changes by child slot; load the touched children in parallel.
	type group struct {
		slot   int
		ch     []Change
		cref   chunkstore.Ref
		clevel int
	}
	var groups []group
	for i := 0; i < len(changes); {
		s := t.slotOf(level, changes[i].Index)
		j := i + 1
		for j < len(changes) && t.slotOf(level, changes[j].Index) == s {
			j++
		}
		cref, cl := t.vchild(v, level, s)
		groups = append(groups, group{slot: s, ch: changes[i:j], cref: cref, clevel: cl})
		i = j
	}
	var fetch []chunkstore.Ref
	for _, g := range groups {
		if g.clevel == level-1 {
			fetch = append(fetch, g.cref)
		}
	}
	if len(fetch) > 1 {
		if err := t.prefetch(ctx, fetch, level-1, w.old); err != nil {
			return chunkstore.Ref{}, err
		}
	}
	if !v.lifted.IsZero() && groups[0].slot != 0 && v.llevel < level-1 {
		// The lifted tree stays in slot 0 untouched: give it the
		// intermediate single-child nodes a real child of this level has.
		r := v.lifted
		lp := scratchRefs(t.fanout)
		for l := v.llevel + 1; l < level; l++ {
			s := *lp
			clear(s)
			s[0] = r
			r = w.add(l, s)
		}
		putScratch(&refScratch, lp)
		slots[0] = r
	}
	for _, g := range groups {
		nr, err := t.update(ctx, w, g.cref, g.clevel, level-1, t.childBase(level, base, g.slot), g.ch)
		if err != nil {
			return chunkstore.Ref{}, err
		}
		slots[g.slot] = nr
	}
	return w.add(level, slots), nil
}

// Truncate removes every index >= n and returns the new root.
func (t *Tree) Truncate(ctx context.Context, root chunkstore.Ref, n uint64) (chunkstore.Ref, error) {
	return t.punch(ctx, root, n, ^uint64(0))
}

// Punch removes every index in [from, to) and returns the new root. Whole
// subtrees inside the range are dropped without being read, so punching a
// huge range costs O(height) node writes.
func (t *Tree) Punch(ctx context.Context, root chunkstore.Ref, from, to uint64) (chunkstore.Ref, error) {
	if to <= from {
		return root, nil
	}
	return t.punch(ctx, root, from, to-1)
}

func (t *Tree) punch(ctx context.Context, root chunkstore.Ref, lo, hi uint64) (chunkstore.Ref, error) {
	b := t.NewBatch(root)
	if err := b.punch(ctx, lo, hi); err != nil {
		return chunkstore.Ref{}, err
	}
	if b.root == root {
		return root, nil
	}
	return b.commit(ctx)
}

// last is the last index a node of level at base covers.
func (t *Tree) last(level int, base uint64) uint64 {
	sb := t.spanBits(level)
	if sb >= 64 {
		return ^uint64(0)
	}
	return base + (1<<sb - 1)
}

// punchNode removes [lo, hi] (inclusive) from the subtree ref of level at base.
func (t *Tree) punchNode(ctx context.Context, w *writer, ref chunkstore.Ref, level int, base, lo, hi uint64) (chunkstore.Ref, error) {
	end := t.last(level, base)
	switch {
	case ref.IsZero() || hi < base || lo > end:
		return ref, nil
	case lo <= base && end <= hi:
		return chunkstore.Ref{}, nil
	}
	nd, ok := w.old[ref]
	if !ok {
		var err error
		if nd, err = t.loadLevel(ctx, ref, level); err != nil {
			return chunkstore.Ref{}, err
		}
	}
	if level == 0 {
		lp := scratchEntries(t.fanout)
		defer putScratch(&entryScratch, lp)
		leaf := *lp
		nd.expandEntries(t.fanout, leaf)
		for s := range leaf {
			if cb := t.childBase(0, base, s); cb >= lo && cb <= hi {
				leaf[s] = Entry{}
			}
		}
		return w.addLeaf(leaf), nil
	}
	sp := scratchRefs(t.fanout)
	defer putScratch(&refScratch, sp)
	slots := *sp
	nd.expand(t.fanout, slots)
	for s := range slots {
		if slots[s].IsZero() {
			continue
		}
		cb := t.childBase(level, base, s)
		var err error
		if slots[s], err = t.punchNode(ctx, w, slots[s], level-1, cb, lo, hi); err != nil {
			return chunkstore.Ref{}, err
		}
	}
	return w.add(level, slots), nil
}

// Walk calls fn for every present index in [from, to) in ascending order.
// fn returning an error stops the walk and Walk returns it. The leaves under
// one interior node are fetched in parallel.
func (t *Tree) Walk(ctx context.Context, root chunkstore.Ref, from, to uint64, fn func(idx uint64, e Entry) error) error {
	if root.IsZero() || from >= to {
		return nil
	}
	n, err := t.load(ctx, root)
	if err != nil {
		return err
	}
	return t.walk(ctx, n, n.level(), 0, from, to, fn)
}

func (t *Tree) walk(ctx context.Context, n node, level int, base, from, to uint64, fn func(uint64, Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if level == 0 {
		var ferr error
		n.eachEntry(t.fanout, func(slot int, e Entry) bool {
			cb := t.childBase(0, base, slot)
			if cb >= to {
				return false
			}
			if cb >= from {
				ferr = fn(cb, e)
			}
			return ferr == nil
		})
		return ferr
	}
	type kid struct {
		base uint64
		ref  chunkstore.Ref
	}
	var kids []kid
	n.each(t.fanout, func(slot int, ref chunkstore.Ref) bool {
		cb := t.childBase(level, base, slot)
		if cb >= to {
			return false
		}
		if t.covers(level-1, cb, from) || cb >= from {
			kids = append(kids, kid{cb, ref})
		}
		return true
	})
	m := map[chunkstore.Ref]node{}
	if len(kids) > 1 {
		refs := make([]chunkstore.Ref, len(kids))
		for i, k := range kids {
			refs[i] = k.ref
		}
		// Bound the prefetch so a walk of a huge node holds few nodes.
		for i := 0; i < len(refs); i += 4 * t.par {
			j := min(i+4*t.par, len(refs))
			if err := t.prefetch(ctx, refs[i:j], level-1, m); err != nil {
				return err
			}
			for _, k := range kids[i:j] {
				c := m[k.ref]
				if err := t.walk(ctx, c, level-1, k.base, from, to, fn); err != nil {
					return err
				}
			}
			clear(m)
		}
		return nil
	}
	for _, k := range kids {
		c, err := t.loadLevel(ctx, k.ref, level-1)
		if err != nil {
			return err
		}
		if err := t.walk(ctx, c, level-1, k.base, from, to, fn); err != nil {
			return err
		}
	}
	return nil
}

// Diff calls fn, in ascending index order, for every index whose block
// content (Entry.Ref) differs between the trees a and b (old is a's, new is
// b's; either may be zero). A block whose bytes moved (into or out of an
// extent) without changing is not reported. Subtrees with equal Refs are
// skipped without being read, so the cost is proportional to the
// difference, not to the trees.
func (t *Tree) Diff(ctx context.Context, a, b chunkstore.Ref, fn func(idx uint64, old, new chunkstore.Ref) error) error {
	if a == b {
		return nil
	}
	pre := map[chunkstore.Ref]node{}
	la, err := t.rootLevel(ctx, a, pre)
	if err != nil {
		return err
	}
	lb, err := t.rootLevel(ctx, b, pre)
	if err != nil {
		return err
	}
	return t.diff(ctx, a, la, b, lb, max(la, lb), 0, pre, fn)
}

// diff compares a (real level la) and b (real level lb) seen at level; pre
// holds nodes the caller prefetched.
func (t *Tree) diff(ctx context.Context, a chunkstore.Ref, la int, b chunkstore.Ref, lb int, level int, base uint64, pre map[chunkstore.Ref]node, fn func(uint64, chunkstore.Ref, chunkstore.Ref) error) error {
	if a == b {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	va, err := t.viewOf(ctx, a, la, level, pre)
	if err != nil {
		return err
	}
	vb, err := t.viewOf(ctx, b, lb, level, pre)
	if err != nil {
		return err
	}
	sa := t.vslots(va, nil)
	sb := t.vslots(vb, nil)
	// Merge the two slot lists.
	var pairs []int
	i, j := 0, 0
	for i < len(sa) || j < len(sb) {
		switch {
		case j >= len(sb) || (i < len(sa) && sa[i] < sb[j]):
			pairs = append(pairs, sa[i])
			i++
		case i >= len(sa) || sb[j] < sa[i]:
			pairs = append(pairs, sb[j])
			j++
		default:
			pairs = append(pairs, sa[i])
			i++
			j++
		}
	}
	if level == 0 {
		for _, p := range pairs {
			ra, _ := t.vchild(va, 0, p)
			rb, _ := t.vchild(vb, 0, p)
			if ra != rb {
				if err := fn(t.childBase(0, base, p), ra, rb); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// Prefetch the differing children in parallel, in bounded groups.
	for i := 0; i < len(pairs); i += 4 * t.par {
		group := pairs[i:min(i+4*t.par, len(pairs))]
		var fetch []chunkstore.Ref
		for _, p := range group {
			ra, cla := t.vchild(va, level, p)
			rb, clb := t.vchild(vb, level, p)
			if ra == rb {
				continue
			}
			if cla == level-1 {
				fetch = append(fetch, ra)
			}
			if clb == level-1 {
				fetch = append(fetch, rb)
			}
		}
		m := map[chunkstore.Ref]node{}
		if len(fetch) > 1 {
			if err := t.prefetch(ctx, fetch, level-1, m); err != nil {
				return err
			}
		}
		for _, p := range group {
			ra, cla := t.vchild(va, level, p)
			rb, clb := t.vchild(vb, level, p)
			if err := t.diff(ctx, ra, cla, rb, clb, level-1, t.childBase(level, base, p), m, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Refs calls fn for every chunk of the tree at root: each node (node=true)
// and each chunk holding blocks (node=false): a standalone block's Ref, or
// an extent's Ref (once per run of entries in a leaf, never the content
// Refs of the blocks inside it, which are not chunks). seen, if not nil, is asked before a node
// is descended into; returning true skips that subtree (a set shared by the
// walks of many trees makes shared subtrees cost once). It is the mark
// phase of garbage collection for one root.
func (t *Tree) Refs(ctx context.Context, root chunkstore.Ref, seen func(chunkstore.Ref) bool, fn func(ref chunkstore.Ref, node bool) error) error {
	if root.IsZero() || (seen != nil && seen(root)) {
		return nil
	}
	n, err := t.load(ctx, root)
	if err != nil {
		return err
	}
	return t.refs(ctx, root, n, seen, fn)
}

func (t *Tree) refs(ctx context.Context, ref chunkstore.Ref, n node, seen func(chunkstore.Ref) bool, fn func(chunkstore.Ref, bool) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fn(ref, true); err != nil {
		return err
	}
	if n.level() == 0 {
		var ferr error
		var last chunkstore.Ref
		n.eachEntry(t.fanout, func(_ int, e Entry) bool {
			if c := e.Chunk(); c != last {
				ferr, last = fn(c, false), c
			}
			return ferr == nil
		})
		return ferr
	}
	var kids []chunkstore.Ref
	n.each(t.fanout, func(_ int, c chunkstore.Ref) bool {
		if seen == nil || !seen(c) {
			kids = append(kids, c)
		}
		return true
	})
	for i := 0; i < len(kids); i += 4 * t.par {
		j := min(i+4*t.par, len(kids))
		m := map[chunkstore.Ref]node{}
		if err := t.prefetch(ctx, kids[i:j], n.level()-1, m); err != nil {
			return err
		}
		for _, c := range kids[i:j] {
			if err := t.refs(ctx, c, m[c], seen, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
