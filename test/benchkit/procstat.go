package benchkit

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPUSample is what a set of processes had used at one instant.
type CPUSample struct {
	OnCPU      int64 // ns on CPU, all threads of all processes (schedstat)
	UTime      int64 // clock ticks in user mode (stat, includes dead threads)
	STime      int64 // clock ticks in kernel mode
	Processes  int
	VolSwitch  int64 // voluntary context switches (status)
	NvolSwitch int64 // involuntary context switches
}

// Sub is the use between sample b and a.
func (a CPUSample) Sub(b CPUSample) CPUSample {
	return CPUSample{OnCPU: a.OnCPU - b.OnCPU, UTime: a.UTime - b.UTime, STime: a.STime - b.STime,
		Processes: a.Processes, VolSwitch: a.VolSwitch - b.VolSwitch, NvolSwitch: a.NvolSwitch - b.NvolSwitch}
}

// Switches is all context switches, voluntary or not.
func (a CPUSample) Switches() int64 { return a.VolSwitch + a.NvolSwitch }

// SamplePIDs reads the CPU use of these processes (not their children).
func SamplePIDs(pids []int) CPUSample {
	var s CPUSample
	for _, pid := range pids {
		s.Processes++
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*"))
		for _, t := range tasks {
			if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					n, _ := strconv.ParseInt(f[0], 10, 64)
					s.OnCPU += n
				}
			}
			if b, err := os.ReadFile(filepath.Join(t, "status")); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					k, v, ok := strings.Cut(line, ":")
					if !ok {
						continue
					}
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					switch k {
					case "voluntary_ctxt_switches":
						s.VolSwitch += n
					case "nonvoluntary_ctxt_switches":
						s.NvolSwitch += n
					}
				}
			}
		}
		if f := StatFields(pid); len(f) > 14 {
			u, _ := strconv.ParseInt(f[13], 10, 64)
			k, _ := strconv.ParseInt(f[14], 10, 64)
			s.UTime += u
			s.STime += k
		}
	}
	return s
}

// StatFields splits /proc/PID/stat; field 1 (comm) may hold spaces, so the
// split starts after its closing parenthesis. Indexes match proc(5) - 1.
func StatFields(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return append([]string{s[:strings.IndexByte(s, ' ')], s[:i+1]}, strings.Fields(s[i+1:])...)
}

// TreePIDs lists root and its descendants.
func TreePIDs(root int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := StatFields(pid); len(f) > 3 {
			pp, _ := strconv.Atoi(f[3])
			parent[pid] = pp
		}
	}
	out := []int{root}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !slices.Contains(out, pid) && slices.Contains(out, pp) {
				out = append(out, pid)
				changed = true
			}
		}
	}
	return out
}

// SelfOnCPU is this process's CPU time, for the load generator's own cost.
func SelfOnCPU() int64 { return SamplePIDs([]int{os.Getpid()}).OnCPU }

// CoreTicks is /proc/stat's busy and total time per CPU, in clock ticks.
type CoreTicks map[int][2]int64

// ReadCoreTicks reads /proc/stat.
func ReadCoreTicks() CoreTicks {
	out := CoreTicks{}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var busy, total int64
		for i, s := range f[1:9] { // guest time is already counted in user
			n, _ := strconv.ParseInt(s, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		out[cpu] = [2]int64{busy, total}
	}
	return out
}

// Busy is the share of a CPU's time spent busy between two readings.
func (a CoreTicks) Busy(b CoreTicks, cpu int) float64 {
	d := b[cpu][1] - a[cpu][1]
	if d <= 0 {
		return 0
	}
	return float64(b[cpu][0]-a[cpu][0]) / float64(d)
}

// PeakRSS is the sum of the processes' peak resident set sizes (VmHWM), MiB.
func PeakRSS(pids []int) float64 {
	var kb int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				kb += n
			}
		}
	}
	return float64(kb) / 1024
}
