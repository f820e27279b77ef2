package blockd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/blockd/internal/refcache"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// Service is blockd on one node: it opens vdisks as Disks (one shared,
// refcounted engine per vdisk and mode, whatever the number of NBD
// connections), resolves NBD export names (it is an nbd.Exports), and runs
// the vdisk operations (create, snapshot, clone, export, import, diff, …).
// It is safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	blocks *refcache.Cache // clean blocks, node-wide
	nodes  *refcache.Cache // tree nodes, node-wide
	dirty  *budget         // write-back cache memory, node-wide

	ctx    context.Context // parent of every Disk; cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	open   map[string]*openEntry // by key (see diskKey)
	busy   map[string]string     // vdisk name -> exclusive operation
	trees  map[string]*tree.Tree // by pool and type
}

type openEntry struct {
	d       *Disk
	refs    int
	err     error
	ready   chan struct{} // closed once d or err is set
	closing bool
	done    chan struct{} // closed once a closing entry is gone
}

// New returns a Service for cfg (defaults applied, then validated).
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", "blockd"), m: newMetrics(cfg.Registerer),
		blocks: refcache.New(cfg.BlockCacheBytes), nodes: refcache.New(cfg.NodeCacheBytes), dirty: newBudget(),
		ctx: ctx, cancel: cancel,
		open: map[string]*openEntry{}, busy: map[string]string{}, trees: map[string]*tree.Tree{},
	}
	bh, bm := s.m.cacheHits.WithLabelValues("block"), s.m.cacheMisses.WithLabelValues("block")
	nh, nm := s.m.cacheHits.WithLabelValues("node"), s.m.cacheMisses.WithLabelValues("node")
	s.blocks.OnHit, s.blocks.OnMiss = bh.Inc, bm.Inc
	s.nodes.OnHit, s.nodes.OnMiss = nh.Inc, nm.Inc
	return s, nil
}

// Close detaches every open vdisk (flushing and releasing leases) and
// stops the service. Disks still in use by connections are closed too;
// their later calls fail with ErrClosed.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var entries []*openEntry
	for _, e := range s.open {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	var first error
	for _, e := range entries {
		<-e.ready
		if e.d == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FlushTimeout)
		if err := e.d.close(ctx); err != nil && first == nil {
			first = err
		}
		cancel()
	}
	s.cancel()
	return first
}

// accountDirty adds delta bytes to the node's write-back cache memory.
func (s *Service) accountDirty(delta int64) {
	s.dirty.add(delta)
	s.m.dirtyBytes.Add(float64(delta))
}

// nodeDirtyFull reports whether the node's write-back caches are full.
func (s *Service) nodeDirtyFull() bool { return s.dirty.used.Load() >= s.cfg.NodeDirtyBytes }

// nodeDirtyHigh reports whether the node's write-back caches are past half
// of their bound: every vdisk then writes back.
func (s *Service) nodeDirtyHigh() bool { return s.dirty.used.Load() > s.cfg.NodeDirtyBytes/2 }

// kickWriteback starts write-back on every open read-write vdisk (a writer
// waits for the node's write-back caches to drain).
func (s *Service) kickWriteback() {
	s.mu.Lock()
	var disks []*Disk
	for _, e := range s.open {
		if e.d != nil && !e.d.ro {
			disks = append(disks, e.d)
		}
	}
	s.mu.Unlock()
	for _, d := range disks {
		d.mu.Lock()
		d.pumpLocked(true)
		d.mu.Unlock()
	}
}

// storeFor returns the store and tree of a vdisk of pool and type.
func (s *Service) storeFor(pool, typ string) (chunkstore.Store, *tree.Tree, error) {
	st := s.cfg.StoreFor(pool, typ)
	if st == nil {
		return nil, nil, fmt.Errorf("blockd: no chunk store for pool %q type %q", pool, typ)
	}
	key := pool + "\x00" + typ
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.trees[key]
	if t == nil {
		var err error
		t, err = tree.New(st, tree.Config{Fanout: s.cfg.Fanout, Cache: s.nodes, Parallelism: s.cfg.Parallelism})
		if err != nil {
			return nil, nil, err
		}
		s.trees[key] = t
	}
	return st, t, nil
}

// vdisk returns a copy of the vdisk's record.
func (s *Service) vdisk(ctx context.Context, name string) (*fsm.VDisk, error) {
	var out *fsm.VDisk
	err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
		v, ok := st.VDisks[name]
		if !ok {
			return &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("no vdisk %q", name)}
		}
		out = copyVDisk(v)
		return nil
	})
	return out, err
}

func copyVDisk(v *fsm.VDisk) *fsm.VDisk {
	c := *v
	c.Snapshots = make([]*fsm.Snapshot, len(v.Snapshots))
	for i, sn := range v.Snapshots {
		x := *sn
		c.Snapshots[i] = &x
	}
	if v.Lease != nil {
		l := *v.Lease
		c.Lease = &l
	}
	if v.Takeover != nil {
		t := *v.Takeover
		c.Takeover = &t
	}
	return &c
}

// Mode is how an export name opens a vdisk.
type Mode int

const (
	ReadWrite Mode = iota // NAME: the head, read-write, under the lease
	ReadOnly              // NAME:ro: the head at open time, read-only
	Snapshot              // NAME@SNAP: a snapshot, read-only
)

// ParseExportName splits an NBD export name: NAME, NAME:ro or NAME@SNAP.
func ParseExportName(export string) (name, snap string, mode Mode, err error) {
	switch {
	case strings.HasSuffix(export, ":ro"):
		name, mode = strings.TrimSuffix(export, ":ro"), ReadOnly
	case strings.Contains(export, "@"):
		name, snap, _ = strings.Cut(export, "@")
		mode = Snapshot
		if snap == "" {
			return "", "", 0, invalidf("export %q names no snapshot after '@'", export)
		}
	default:
		name = export
	}
	if name == "" || strings.ContainsAny(name, "@:/") || strings.ContainsAny(snap, "@:/") {
		return "", "", 0, invalidf("export name %q: want NAME, NAME:ro or NAME@SNAP", export)
	}
	return name, snap, mode, nil
}

// attachRefused is an attach refused for a reason the client should read;
// it matches nbd.ErrAttached.
type attachRefused struct{ msg string }

func (e *attachRefused) Error() string        { return e.msg }
func (e *attachRefused) Is(target error) bool { return target == nbd.ErrAttached || target == ErrBusy }

// Open opens the export name (NAME, NAME:ro or NAME@SNAP) and returns its
// Disk and the function to call when done with it. Opens of one vdisk in
// one mode share one Disk; the last release flushes it and gives its lease
// back (a tmp vdisk is deleted instead). A read-write open of a vdisk
// attached read-write on another node fails with an *AttachedError.
func (s *Service) Open(ctx context.Context, export string) (*Disk, func(), error) {
	return s.openAs(ctx, export, false)
}

// ErrAttachedHere is OpenAlone's refusal: the vdisk is open (or being
// opened) read-write on this node already.
var ErrAttachedHere = errors.New("blockd: vdisk attached read-write on this node")

// OpenAlone opens vdisk name read-write as Open does, but only if nothing
// on this node has it open read-write or is opening it (an NBD client, a
// VM, an operation): it fails with an error matching ErrAttachedHere then.
// The check and the open are one step, so two callers never both get it.
func (s *Service) OpenAlone(ctx context.Context, name string) (*Disk, func(), error) {
	if _, _, mode, err := ParseExportName(name); err != nil {
		return nil, nil, err
	} else if mode != ReadWrite {
		return nil, nil, fmt.Errorf("blockd: OpenAlone of %q: not a read-write export name", name)
	}
	return s.openAs(ctx, name, true)
}

// openAs is Open, and OpenAlone with alone.
func (s *Service) openAs(ctx context.Context, export string, alone bool) (*Disk, func(), error) {
	name, snap, mode, err := ParseExportName(export)
	if err != nil {
		return nil, nil, err
	}
	var key string
	var v *fsm.VDisk
	switch mode {
	case ReadWrite:
		key = "rw/" + name
	default:
		if mode != Snapshot {
			// NAME:ro is the head at open time, holding every write a
			// writer acknowledged before (wherever it is, or in the
			// journal of one that failed).
			if err := s.settle(ctx, name); err != nil {
				return nil, nil, err
			}
		}
		if v, err = s.vdisk(ctx, name); err != nil {
			return nil, nil, err
		}
		head := v.Head
		if mode == Snapshot {
			sn := v.Snapshot(snap)
			if sn == nil {
				return nil, nil, &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s has no snapshot %q", name, snap)}
			}
			head = sn.Head
		}
		key = "ro/" + export + "/" + head.String()
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, nil, ErrClosed
		}
		if mode == ReadWrite {
			if reason, ok := s.busy[name]; ok {
				s.mu.Unlock()
				return nil, nil, &attachRefused{fmt.Sprintf("vdisk %s is busy on this node (%s); retry when it is done", name, reason)}
			}
		}
		e := s.open[key]
		if alone && e != nil && !e.closing {
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("vdisk %s: %w", name, ErrAttachedHere)
		}
		if e == nil {
			e = &openEntry{ready: make(chan struct{}), done: make(chan struct{}), refs: 1}
			s.open[key] = e
			s.mu.Unlock()
			d, err := s.openDisk(ctx, export, name, snap, mode, v)
			s.mu.Lock()
			e.d, e.err = d, err
			if err != nil {
				delete(s.open, key)
			}
			close(e.ready)
			s.mu.Unlock()
			if err != nil {
				return nil, nil, err
			}
			s.m.openDisks.WithLabelValues(modeLabel(mode)).Inc()
			return d, s.releaser(key, e), nil
		}
		if e.closing {
			s.mu.Unlock()
			select {
			case <-e.done:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		e.refs++
		s.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			s.releaser(key, e)()
			return nil, nil, ctx.Err()
		}
		if e.err != nil {
			s.mu.Lock()
			e.refs--
			s.mu.Unlock()
			return nil, nil, e.err
		}
		if mode == ReadWrite { // pick up a resize done meanwhile
			if v, err := s.vdisk(ctx, name); err == nil {
				e.d.setSize(v.Size)
			}
		}
		return e.d, s.releaser(key, e), nil
	}
}

func modeLabel(m Mode) string {
	if m == ReadWrite {
		return "rw"
	}
	return "ro"
}

// releaser returns the idempotent release function of one open.
func (s *Service) releaser(key string, e *openEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.refs--
			if e.refs > 0 || e.d == nil || e.closing {
				s.mu.Unlock()
				return
			}
			e.closing = true
			s.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FlushTimeout)
			e.d.close(ctx)
			cancel()
			mode := "rw"
			if e.d.ro {
				mode = "ro"
			}
			s.m.openDisks.WithLabelValues(mode).Dec()
			s.mu.Lock()
			if s.open[key] == e {
				delete(s.open, key)
			}
			close(e.done)
			s.mu.Unlock()
		})
	}
}

// openDisk builds a new Disk.
func (s *Service) openDisk(ctx context.Context, export, name, snap string, mode Mode, v *fsm.VDisk) (*Disk, error) {
	if mode != ReadWrite {
		st, tr, err := s.storeFor(v.Pool, v.Type)
		if err != nil {
			return nil, err
		}
		p := diskParams{name: name, label: export, typ: v.Type, bs: v.BlockSize, size: v.Size, head: v.Head,
			readOnly: true, store: st, tree: tr}
		if mode == Snapshot {
			sn := v.Snapshot(snap)
			if sn == nil {
				return nil, &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s has no snapshot %q", name, snap)}
			}
			p.head, p.size = sn.Head, sn.Size
		}
		s.log.Debug("vdisk opened read-only", "export", export, "head", p.head.Short())
		return newDisk(s, p), nil
	}
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return nil, err
	}
	st, tr, err := s.storeFor(v.Pool, v.Type)
	if err != nil {
		return nil, err
	}
	var jl journal.Log
	if s.cfg.JournalFor != nil {
		jl = s.cfg.JournalFor(v.Pool, v.Type)
	}
	wasJournaled := v.Journaled
	if wasJournaled && jl == nil {
		// Attaching would lose the writes only its journal holds.
		return nil, fmt.Errorf("blockd: vdisk %s: its last writer failed with writes only in its journal, and this node has no journal to replay them from; attach it on a storage node", name)
	}
	lease, err := s.acquire(ctx, name, jl != nil)
	if err != nil {
		return nil, err
	}
	// The head can only move under our epoch now: read it after the lease.
	if v, err = s.vdisk(ctx, name); err != nil {
		s.releaseLease(name, lease.Epoch)
		return nil, err
	}
	s.log.Info("vdisk attached read-write", "vdisk", name, "epoch", lease.Epoch, "head", v.Head.Short(), "type", v.Type, "journal", jl != nil)
	d := newDisk(s, diskParams{name: name, label: name, typ: v.Type, bs: v.BlockSize, size: v.Size, head: v.Head,
		epoch: lease.Epoch, leaseUntil: time.Unix(0, lease.Expires), store: st, tree: tr})
	d.jr.name = journalName(v)
	if jl != nil {
		if err := d.replayJournal(ctx, jl, v, wasJournaled); err != nil {
			d.abort()
			s.releaseLease(name, lease.Epoch)
			return nil, err
		}
	}
	d.mu.Lock()
	d.jr.log = jl
	if t := v.Takeover; t != nil && t.Epoch == lease.Epoch {
		d.lease.takeover = t // its first write is timed (completedLocked)
	}
	d.mu.Unlock()
	return d, nil
}

// settle makes the vdisk's head hold every acknowledged write before an
// operation reads it: a vdisk attached read-write on this node is synced;
// one attached on another node is synced there (Config.Peers); one whose
// last writer failed with writes only in its journal is attached here for
// a moment, which replays them. A holder that cannot be reached is waited
// for until its lease lapses (then its journal is replayed here), at most
// settleWait.
func (s *Service) settle(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.settleWait())
	defer cancel()
	var last error
	for {
		if d := s.localRW(name); d != nil {
			return d.Sync(ctx)
		}
		var holder string
		var until time.Time
		err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
			v, ok := st.VDisks[name]
			if !ok {
				return &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s not found", name)}
			}
			if holder = st.LeasedBy(v, time.Now().UnixNano()); holder != "" {
				until = time.Unix(0, v.Lease.Expires)
			}
			return nil
		})
		switch {
		case err != nil:
			return err
		case holder == "":
			return s.replayFailed(ctx, name)
		case holder == s.cfg.Node && s.isBusy(name):
			return fmt.Errorf("%w: vdisk %s: an operation holds its lease on this node (%s); retry when it is done", ErrBusy, name, s.cfg.Node)
		case holder != s.cfg.Node && s.cfg.Peers == nil:
			return nil // no way to ask: the holder's last commit
		case holder != s.cfg.Node:
			err := s.cfg.Peers.Sync(ctx, holder, name)
			if err == nil {
				return nil
			}
			last = err
			if !errors.Is(err, ErrNotAttached) {
				s.log.Warn("the node holding a vdisk's lease did not commit it; waiting for it or for its lease to lapse",
					"vdisk", name, "holder", holder, "lease_until", until, "err", err)
			}
		}
		// Being attached or detached here, released there meanwhile, or
		// the holder unreachable: look again soon.
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("blockd: vdisk %s is attached read-write on node %s, which could not commit it (so what it acknowledged may be missing): %w", name, holder, last)
		case <-time.After(min(time.Until(until)+10*time.Millisecond, 200*time.Millisecond)):
		}
	}
}

// settleWait bounds settle: the lease of a holder that died lapses within
// LeaseTTL.
func (s *Service) settleWait() time.Duration { return 2*s.cfg.LeaseTTL + 10*time.Second }

// SyncLocal commits vdisk name if it is attached read-write on this node
// (the other side of Peers.Sync): when it returns nil, the head holds
// every write acknowledged here before the call. ErrNotAttached otherwise.
func (s *Service) SyncLocal(ctx context.Context, name string) error {
	d := s.localRW(name)
	if d == nil {
		return fmt.Errorf("%w: vdisk %s on node %s", ErrNotAttached, name, s.cfg.Node)
	}
	return d.Sync(ctx)
}

// replayFailed replays the journal of a vdisk whose writer failed (see
// settle); it does nothing for one attached anywhere.
func (s *Service) replayFailed(ctx context.Context, name string) error {
	var journaled, live bool
	err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
		v, ok := st.VDisks[name]
		if !ok {
			return &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s not found", name)}
		}
		journaled = v.Journaled && v.Type != fsm.VDiskTmp
		live = st.LeasedBy(v, time.Now().UnixNano()) != ""
		return nil
	})
	if err != nil || !journaled || live {
		return err
	}
	s.log.Info("replaying the journal of a vdisk whose writer failed", "vdisk", name)
	_, release, err := s.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("blockd: vdisk %s: replaying its journal: %w", name, err)
	}
	release()
	return nil
}

// acquire takes the vdisk's read-write lease for this node.
// journal says the writer keeps a journal (fsm.VDisk.Journaled).
func (s *Service) acquire(ctx context.Context, name string, journal bool) (*fsm.Lease, error) {
	l, err := raft.Apply(ctx, s.cfg.Control, fsm.LeaseAcquire, fsm.LeaseArgs{Name: name, Node: s.cfg.Node, TTL: int64(s.cfg.LeaseTTL), Journal: journal})
	if err != nil {
		if errors.Is(err, fsm.ErrLeased) {
			holder := "?"
			if v, rerr := s.vdisk(ctx, name); rerr == nil && v.Lease != nil {
				holder = v.Lease.Node
			}
			return nil, &AttachedError{VDisk: name, Node: holder}
		}
		return nil, err
	}
	if l == nil || l.Epoch == 0 {
		return nil, fmt.Errorf("blockd: lease on %s: answer without an epoch", name)
	}
	return l, nil
}

func (s *Service) releaseLease(name string, epoch uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := raft.Exec(ctx, s.cfg.Control, fsm.LeaseRelease, fsm.LeaseArgs{Name: name, Node: s.cfg.Node, Epoch: epoch}); err != nil &&
		!errors.Is(err, fsm.ErrStaleEpoch) && !errors.Is(err, fsm.ErrNotFound) {
		s.log.Warn("lease release failed; it lapses after its TTL", "vdisk", name, "err", err)
	}
}

// openDisks returns the read-write Disks open on this node.
func (s *Service) openDisks() []*Disk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Disk
	for _, e := range s.open {
		select {
		case <-e.ready:
			if e.d != nil && !e.d.ro {
				out = append(out, e.d)
			}
		default:
		}
	}
	return out
}

// localRW returns the read-write Disk of name open on this node, if any.
func (s *Service) localRW(name string) *Disk {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.open["rw/"+name]; e != nil && !e.closing {
		select {
		case <-e.ready:
			return e.d
		default:
		}
	}
	return nil
}

// isBusy reports whether an exclusive operation runs on name here.
func (s *Service) isBusy(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.busy[name]
	return ok
}

// exclusive marks name busy with an operation that needs the vdisk not to
// be attached read-write on this node; it fails if it is.
func (s *Service) exclusive(name, what string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if e := s.open["rw/"+name]; e != nil {
		return nil, fmt.Errorf("%w: vdisk %s is attached read-write on this node (%s); detach it first", ErrBusy, name, s.cfg.Node)
	}
	if other, ok := s.busy[name]; ok {
		return nil, fmt.Errorf("%w: vdisk %s: %s in progress", ErrBusy, name, other)
	}
	s.busy[name] = what
	return func() {
		s.mu.Lock()
		delete(s.busy, name)
		s.mu.Unlock()
	}, nil
}

// --- nbd.Exports ---

func exportInfo(name string, v *fsm.VDisk, size int64, ro bool) nbd.ExportInfo {
	return nbd.ExportInfo{
		Name:        name,
		Description: fmt.Sprintf("zos vdisk %s (%s)", v.Name, v.Type),
		Size:        size,
		ReadOnly:    ro,
		BlockSize:   uint32(v.BlockSize),
		MultiConn:   true,
	}
}

// List implements nbd.Exports: every vdisk, by name.
func (s *Service) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	var out []nbd.ExportInfo
	err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
		for _, v := range st.SortedVDisks() {
			out = append(out, exportInfo(v.Name, v, v.Size, false))
		}
		return nil
	})
	return out, err
}

// Info implements nbd.Exports.
func (s *Service) Info(ctx context.Context, export string) (nbd.ExportInfo, error) {
	name, snap, mode, err := ParseExportName(export)
	if err != nil {
		return nbd.ExportInfo{}, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
	}
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return nbd.ExportInfo{}, exportErr(err)
	}
	switch mode {
	case Snapshot:
		sn := v.Snapshot(snap)
		if sn == nil {
			return nbd.ExportInfo{}, fmt.Errorf("%w: vdisk %s has no snapshot %q", nbd.ErrUnknownExport, name, snap)
		}
		return exportInfo(export, v, sn.Size, true), nil
	case ReadOnly:
		return exportInfo(export, v, v.Size, true), nil
	}
	return exportInfo(export, v, v.Size, false), nil
}

// exportErr maps a not-found refusal to nbd.ErrUnknownExport.
func exportErr(err error) error {
	if errors.Is(err, fsm.ErrNotFound) {
		return fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
	}
	return err
}

// openExport is nbd.Exports.Open (see Service.Open).
func (s *Service) openExport(ctx context.Context, export string) (nbd.Export, nbd.ExportInfo, func(), error) {
	d, release, err := s.Open(ctx, export)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, nbd.ExportInfo{}, nil, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
		}
		return nil, nbd.ExportInfo{}, nil, exportErr(err)
	}
	info := nbd.ExportInfo{
		Name: export, Description: fmt.Sprintf("zos vdisk %s (%s)", d.name, d.typ),
		Size: d.Size(), ReadOnly: d.ro, BlockSize: uint32(d.bs), MultiConn: true,
	}
	return d, info, release, nil
}

// Exports returns the nbd.Exports view of the service, for nbd.Config.
func (s *Service) Exports() nbd.Exports { return exportsView{s} }

type exportsView struct{ s *Service }

func (e exportsView) List(ctx context.Context) ([]nbd.ExportInfo, error) { return e.s.List(ctx) }
func (e exportsView) Info(ctx context.Context, name string) (nbd.ExportInfo, error) {
	return e.s.Info(ctx, name)
}
func (e exportsView) Open(ctx context.Context, name string) (nbd.Export, nbd.ExportInfo, func(), error) {
	return e.s.openExport(ctx, name)
}
