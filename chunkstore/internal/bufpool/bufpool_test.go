package bufpool

import "testing"

func TestClasses(t *testing.T) {
	prev := 0
	for c := range pools {
		sz := classSize(c)
		if sz <= prev || sz > prev*5/4+1 && prev > 0 {
			t.Fatalf("class %d has size %d after %d", c, sz, prev)
		}
		if class(sz) != c || class(sz-1) != c && sz-1 > prev || class(prev+1) != c && prev > 0 {
			t.Fatalf("class(%d) = %d, want %d", sz, class(sz), c)
		}
		prev = sz
	}
	if classSize(len(pools)-1) != MaxSize {
		t.Fatalf("last class %d", classSize(len(pools)-1))
	}
}

func TestGetPut(t *testing.T) {
	for _, n := range []int{0, 100, MinSize / 2, MinSize, MinSize + 1, 1 << 20, 1<<20 + 64, 3 << 20, MaxSize, MaxSize + 1} {
		b := Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d) has length %d", n, len(b))
		}
		if n >= MinSize/2 && n <= MaxSize && (exact(cap(b)) < 0 || cap(b) < n || cap(b) > n*5/4+MinSize) {
			t.Fatalf("Get(%d) has capacity %d", n, cap(b))
		}
		Put(b)
	}
	if c := cap(Get(1<<20 + 64)); c != 1<<20+1<<18 {
		t.Fatalf("1 MiB + 64 gets capacity %d", c)
	}
	Put(make([]byte, 3000)) // not a class: dropped
	Put(b4097())
}

func b4097() []byte { return make([]byte, 4097) }

func BenchmarkGetPut(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Put(Get(1 << 20))
	}
}
