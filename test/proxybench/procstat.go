package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cpuSample is what a process tree had used at one instant.
type cpuSample struct {
	onCPU      int64 // ns on CPU, all threads of all processes (schedstat)
	utime      int64 // clock ticks in user mode (stat, includes dead threads)
	stime      int64 // clock ticks in kernel mode
	processes  int
	volSwitch  int64 // voluntary context switches (status)
	nvolSwitch int64 // involuntary context switches
}

func (a cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{onCPU: a.onCPU - b.onCPU, utime: a.utime - b.utime, stime: a.stime - b.stime,
		processes: a.processes, volSwitch: a.volSwitch - b.volSwitch, nvolSwitch: a.nvolSwitch - b.nvolSwitch}
}

// samplePIDs reads the CPU use of these processes (not their children).
func samplePIDs(pids []int) cpuSample {
	var s cpuSample
	for _, pid := range pids {
		s.processes++
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*"))
		for _, t := range tasks {
			if b, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					n, _ := strconv.ParseInt(f[0], 10, 64)
					s.onCPU += n
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
						s.volSwitch += n
					case "nonvoluntary_ctxt_switches":
						s.nvolSwitch += n
					}
				}
			}
		}
		if f := statFields(pid); len(f) > 14 {
			u, _ := strconv.ParseInt(f[13], 10, 64)
			k, _ := strconv.ParseInt(f[14], 10, 64)
			s.utime += u
			s.stime += k
		}
	}
	return s
}

// statFields splits /proc/PID/stat; field 1 (comm) may hold spaces, so the
// split starts after its closing parenthesis. Indexes match proc(5) - 1.
func statFields(pid int) []string {
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

// treePIDs lists root and its descendants.
func treePIDs(root int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 3 {
			pp, _ := strconv.Atoi(f[3])
			parent[pid] = pp
		}
	}
	out := []int{root}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if pid == root || contains(out, pid) || !contains(out, pp) {
				continue
			}
			out = append(out, pid)
			changed = true
		}
	}
	return out
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// selfOnCPU is this process's CPU time, for the load generator's own cost.
func selfOnCPU() int64 { return samplePIDs([]int{os.Getpid()}).onCPU }

// coreTicks is /proc/stat's busy and total time per CPU, in clock ticks.
type coreTicks map[int][2]int64

func readCoreTicks() coreTicks {
	out := coreTicks{}
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
		for i, s := range f[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			if i >= 8 { // guest time is already in user
				break
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		out[cpu] = [2]int64{busy, total}
	}
	return out
}

// busy is the share of a CPU's time spent busy between two readings.
func (a coreTicks) busy(b coreTicks, cpu int) float64 {
	d := b[cpu][1] - a[cpu][1]
	if d <= 0 {
		return 0
	}
	return float64(b[cpu][0]-a[cpu][0]) / float64(d)
}
