package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cpuSample is what a set of processes had used at one instant.
type cpuSample struct {
	onCPU int64 // ns on CPU, all threads (/proc/PID/task/TID/schedstat, first field)
	utime int64 // clock ticks in user mode (/proc/PID/stat)
	stime int64 // clock ticks in kernel mode
	ctxSw int64 // voluntary + involuntary context switches
}

func (a cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{onCPU: a.onCPU - b.onCPU, utime: a.utime - b.utime, stime: a.stime - b.stime, ctxSw: a.ctxSw - b.ctxSw}
}

// samplePIDs reads the CPU use of these processes' threads.
func samplePIDs(pids []int) cpuSample {
	var s cpuSample
	for _, pid := range pids {
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
					if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
						n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
						s.ctxSw += n
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

// statFields splits /proc/PID/stat; indexes match proc(5) minus one.
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

// treePIDs lists root and its descendants (taskset execs in place, but a
// proxy may fork workers).
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
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !in[pid] && in[pp] {
				out = append(out, pid)
				in[pid] = true
				changed = true
			}
		}
	}
	return out
}

func selfOnCPU() int64 { return samplePIDs([]int{os.Getpid()}).onCPU }

// coreTicks is /proc/stat's busy and total ticks per CPU.
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

// busy is the share of a CPU's time spent busy between two readings.
func (a coreTicks) busy(b coreTicks, cpu int) float64 {
	d := b[cpu][1] - a[cpu][1]
	if d <= 0 {
		return 0
	}
	return float64(b[cpu][0]-a[cpu][0]) / float64(d)
}

// peakRSS is the sum of the processes' peak resident set sizes (VmHWM), MiB.
func peakRSS(pids []int) float64 {
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
