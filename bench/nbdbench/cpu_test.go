package nbdbench

import (
	"math"
	"testing"
)

func TestParseCPU(t *testing.T) {
	stat := "cpu  100 5 50 800 40 2 3 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1 2 3\n"
	s, err := parseCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	// busy: user nice system irq softirq steal; idle and iowait are not;
	// guest (already in user) is not counted twice.
	if s.busy != 100+5+50+2+3+0 || s.total != 100+5+50+800+40+2+3+0 {
		t.Fatalf("parsed %+v", s)
	}
	later := cpuSample{busy: s.busy + 150, total: s.total + 200}
	if got := coresBusy(s, later, 2); math.Abs(got-1.5) > 1e-9 {
		t.Fatalf("coresBusy %v, want 1.5", got)
	}
	if got := coresBusy(later, later, 2); got != 0 {
		t.Fatalf("coresBusy over no time: %v", got)
	}
	for _, bad := range []string{"", "intr 1 2\n", "cpu 1 2 x 4 5\n"} {
		if _, err := parseCPU([]byte(bad)); err == nil {
			t.Fatalf("parsed %q", bad)
		}
	}
	if s, ok := readCPU(); !ok || s.total == 0 || s.busy > s.total {
		t.Fatalf("this machine's /proc/stat: %+v %v", s, ok)
	}
}
