package raft

import (
	"context"
	"errors"
	"testing"

	"github.com/zosproject/zos/raft/fsm"
)

// TestApplyTyped: Apply encodes the arguments, proposes the op by name and
// decodes the result into the op's type; refusals stay *fsm.Error values.
func TestApplyTyped(t *testing.T) {
	ctx := context.Background()
	l := NewLocal("n1", "n2", "n3")
	p, err := Apply(ctx, l, fsm.PoolCreate, fsm.PoolArgs{Name: "fast", K: 2, M: 1})
	if err != nil || p == nil || p.Name != "fast" || p.K != 2 {
		t.Fatalf("pool.create = %+v, %v", p, err)
	}
	v, err := Apply(ctx, l, fsm.VDiskCreate, fsm.VDiskCreateArgs{Name: "vm1", Size: 1 << 20, BlockSize: 4096, Type: fsm.VDiskBoot, Pool: "fast"})
	if err != nil || v.Name != "vm1" || v.Pool != "fast" {
		t.Fatalf("vdisk.create = %+v, %v", v, err)
	}
	lease, err := Apply(ctx, l, fsm.LeaseAcquire, fsm.LeaseArgs{Name: "vm1", Node: "n1", TTL: int64(1e12)})
	if err != nil || lease.Epoch != 1 || lease.Node != "n1" {
		t.Fatalf("lease.acquire = %+v, %v", lease, err)
	}
	if _, err := Apply(ctx, l, fsm.VDiskHead, fsm.VDiskHeadArgs{Name: "vm1", Epoch: 2}); !errors.Is(err, fsm.ErrStaleEpoch) {
		t.Fatalf("stale head update: %v", err)
	}
	if err := Exec(ctx, l, fsm.VDiskDelete, fsm.VDiskDeleteArgs{Name: "vm1", Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := Exec(ctx, l, fsm.VDiskDelete, fsm.VDiskDeleteArgs{Name: "vm1"}); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestApplyRequestID: a typed proposal under WithRequestID takes effect
// once, and a repeat of the operation (a new context with the same id)
// gets the same typed result.
func TestApplyRequestID(t *testing.T) {
	l := NewLocal("n1")
	args := fsm.KVPutArgs{NS: "t", Key: "k", Value: []byte("v")}
	a, err := Apply(WithRequestID(context.Background(), "op-1"), l, fsm.KVPut, args)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Apply(WithRequestID(context.Background(), "op-1"), l, fsm.KVPut, args)
	if err != nil || a.Version != 1 || b.Version != 1 || string(b.Value) != "v" {
		t.Fatalf("answers %+v %+v, %v", a, b, err)
	}
}
