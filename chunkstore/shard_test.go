package chunkstore

import (
	"errors"
	"slices"
	"testing"
)

func TestProfile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Profile
		ok   bool
	}{
		{"4+2", Profile{4, 2}, true},
		{" 1+0 ", Profile{1, 0}, true},
		{"0+2", Profile{}, false},
		{"4-2", Profile{}, false},
		{"100+100", Profile{}, false},
		{"x+1", Profile{}, false},
	} {
		p, err := ParseProfile(tc.in)
		if (err == nil) != tc.ok || (tc.ok && p != tc.want) {
			t.Errorf("ParseProfile(%q) = %v, %v", tc.in, p, err)
		}
		if err != nil && !errors.Is(err, ErrBadProfile) {
			t.Errorf("ParseProfile(%q) error %v does not wrap ErrBadProfile", tc.in, err)
		}
	}
	for n, want := range map[int]string{1: "1+0", 2: "1+1", 3: "2+1", 4: "2+2", 5: "3+2", 6: "4+2", 9: "6+2", 20: "8+3"} {
		if got := DefaultProfile(n).String(); got != want {
			t.Errorf("DefaultProfile(%d) = %s, want %s", n, got, want)
		}
		if p := DefaultProfile(n); p.N() > n && n > 1 {
			t.Errorf("DefaultProfile(%d) = %s needs more nodes", n, p)
		}
	}
}

func TestShardKeyOrder(t *testing.T) {
	a := Sum([]byte("a"))
	keys := []ShardKey{
		{a, Profile{4, 2}, 5}, {a, Profile{1, 0}, 0}, {a, Profile{4, 2}, 0}, {a, Profile{2, 1}, 2},
	}
	slices.SortFunc(keys, ShardKey.Compare)
	var prev []byte
	for _, k := range keys {
		b := k.AppendBinary(nil)
		if prev != nil && string(prev) >= string(b) {
			t.Fatalf("encoding order differs from Compare at %v", k)
		}
		prev = b
		d, err := DecodeShardKey(b)
		if err != nil || d != k {
			t.Fatalf("round trip %v -> %v, %v", k, d, err)
		}
	}
	if _, err := DecodeShardKey(make([]byte, 3)); err == nil {
		t.Fatal("short key decoded")
	}
	q := ShardKey{Ref: a, Index: AnyIndex}
	for _, k := range keys {
		if !q.Matches(k) {
			t.Fatalf("wildcard %v does not match %v", q, k)
		}
	}
	if (ShardKey{Ref: a, Profile: Profile{4, 2}, Index: AnyIndex}).Matches(keys[0]) {
		t.Fatal("profile 4+2 query matched a 1+0 shard")
	}
}

func TestShardVerify(t *testing.T) {
	k := ShardKey{Ref: Sum([]byte("x")), Profile: Profile{2, 1}, Index: 1}
	s := NewShard(k, 6, []byte("abc"))
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckShape(); err != nil {
		t.Fatal(err)
	}
	s.Data = []byte("abd")
	if err := s.Verify(); !IsCorruption(err) {
		t.Fatalf("flipped byte: %v", err)
	}
	s.Size = 4
	if err := s.CheckShape(); err == nil {
		t.Fatal("wrong shard size accepted")
	}
}
