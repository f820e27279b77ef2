package nbdbench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuSample is the machine's CPU time from /proc/stat: busy and total
// jiffies over all CPUs.
type cpuSample struct{ busy, total uint64 }

// readCPU samples /proc/stat; ok is false where there is none.
func readCPU() (s cpuSample, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, false
	}
	s, err = parseCPU(b)
	return s, err == nil
}

// parseCPU reads the aggregate "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal …; idle and iowait are not busy, guest
// time is already counted in user.
func parseCPU(b []byte) (cpuSample, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var s cpuSample
		for i, v := range f[1:min(len(f), 9)] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return cpuSample{}, fmt.Errorf("nbdbench: /proc/stat cpu field %d: %w", i+1, err)
			}
			s.total += n
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
		return s, nil
	}
	return cpuSample{}, fmt.Errorf("nbdbench: no cpu line in /proc/stat")
}

// coresBusy is the average number of the machine's CPUs busy between a
// and b (every process: fio, the servers, the kernel), of ncpu.
func coresBusy(a, b cpuSample, ncpu int) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total) * float64(ncpu)
}
