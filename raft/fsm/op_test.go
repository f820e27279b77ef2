package fsm

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestRegistry: every op name in the log format has a handler (noop is
// applied inline), and each typed descriptor names its registered op.
func TestRegistry(t *testing.T) {
	names := []string{OpInit, OpNodeAdd, OpNodeUpdate, OpNodeState, OpNodeRemove, OpNodeVoter,
		OpPoolCreate, OpPoolDelete, OpVDiskCreate, OpVDiskDelete, OpVDiskResize, OpVDiskHead,
		OpVDiskSnapshot, OpVDiskSnapDel, OpVDiskRollback, OpVDiskClone, OpLeaseAcquire,
		OpLeaseRenew, OpLeaseRelease, OpFlistPut, OpFlistDelete, OpTokenCreate, OpTokenDelete,
		OpPinAdd, OpPinRemove, OpKVPut, OpKVDelete, OpBatch}
	for _, n := range names {
		if registry[n] == nil {
			t.Errorf("op %s has no handler", n)
		}
	}
	if len(registry) != len(names) {
		t.Errorf("%d ops registered, %d names", len(registry), len(names))
	}
	for _, d := range []interface{ Name() string }{ClusterInit, NodeAdd, NodeUpdate, NodeSetState,
		NodeRemove, NodeSetVoter, PoolCreate, PoolDelete, VDiskCreate, VDiskDelete, VDiskResize,
		VDiskHead, VDiskSnapshot, VDiskSnapshotDelete, VDiskRollback, VDiskClone, LeaseAcquire,
		LeaseRenew, LeaseRelease, FlistPut, FlistDelete, TokenCreate, TokenDelete, PinAdd,
		PinRemove, KVPut, KVDelete, Batch} {
		if registry[d.Name()] == nil {
			t.Errorf("descriptor %s is not registered", d.Name())
		}
	}
}

func TestOpResult(t *testing.T) {
	kv, err := KVPut.Result(json.RawMessage(`{"value":"dg==","version":3}`))
	if err != nil || kv == nil || kv.Version != 3 || string(kv.Value) != "v" {
		t.Fatalf("KVPut.Result = %+v, %v", kv, err)
	}
	if kv, err := KVPut.Result(nil); err != nil || kv != nil {
		t.Fatalf("empty result = %+v, %v", kv, err)
	}
	if _, err := KVDelete.Result(json.RawMessage(`"ignored"`)); err != nil {
		t.Fatalf("None result: %v", err)
	}
	if _, err := VDiskHead.Result(json.RawMessage(`[`)); err == nil || !strings.Contains(err.Error(), OpVDiskHead) {
		t.Fatalf("bad result: %v", err)
	}
}

// TestBatchResultEncoding: a refused or valueless command in a batch
// encodes without a value, as before the registry (no typed nil leaks into
// BatchResult.Value).
func TestBatchResultEncoding(t *testing.T) {
	h := newHarness(t)
	sub := func(op string, args any) Command {
		c, err := NewCommand(op, 0, args)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	v := h.ok(OpBatch, BatchArgs{Cmds: []Command{
		sub(OpVDiskHead, VDiskHeadArgs{Name: "nope", Epoch: 1}),
		sub(OpKVPut, KVPutArgs{NS: "t", Key: "k", Value: []byte("v")}),
		sub(OpKVDelete, KVDeleteArgs{NS: "t", Key: "k"}),
	}})
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"error":{"code":"not_found","message":"no vdisk \"nope\""}},{"value":{"value":"dg==","version":1}},{}]`
	if string(b) != want {
		t.Fatalf("batch result\n got %s\nwant %s", b, want)
	}
}
