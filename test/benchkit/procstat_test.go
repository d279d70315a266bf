package benchkit

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestReadsThisProcessAndItsChildren(t *testing.T) {
	x := 0
	for i := range 5_000_000 { // burn a little CPU so there is something to see
		x += i
	}
	_ = x
	s := SamplePIDs([]int{os.Getpid()})
	if s.OnCPU <= 0 || s.Processes != 1 || s.Switches() < 0 {
		t.Fatalf("sample of this process: %+v", s)
	}
	if d := SamplePIDs([]int{os.Getpid()}).Sub(s); d.OnCPU < 0 {
		t.Fatalf("CPU time went backwards: %+v", d)
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if tree := TreePIDs(os.Getpid()); !slices.Contains(tree, cmd.Process.Pid) || tree[0] != os.Getpid() {
		t.Fatalf("tree %v lacks the child %d", tree, cmd.Process.Pid)
	}
	a := ReadCoreTicks()
	if len(a) == 0 {
		t.Fatal("no CPUs in /proc/stat")
	}
	if b := ReadCoreTicks(); a.Busy(b, 0) < 0 || a.Busy(b, 0) > 1 {
		t.Fatalf("busy share out of range: %v", a.Busy(b, 0))
	}
	if PeakRSS([]int{os.Getpid()}) <= 0 {
		t.Fatal("no peak RSS for this process")
	}
}
