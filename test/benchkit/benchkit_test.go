package benchkit

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEchoClientAndLoad(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewEchoServer()
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	payload := EncodeEcho(EchoData(300)) // a two-byte length
	if len(payload) != 303 || payload[1] != 0xac || payload[2] != 0x02 || string(payload[3:6]) != "abc" {
		t.Fatalf("EncodeEcho: % x…", payload[:6])
	}
	c, err := NewEchoClient(ln.Addr().String(), nil, "token", payload)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := WaitReady(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	m := &Meter{BackendPIDs: []int{os.Getpid()}}
	var marks []bool
	res := Load{Conc: 4, Warm: 50 * time.Millisecond, Measure: 300 * time.Millisecond}.Run(c, func(end bool) {
		m.Mark(end)
		marks = append(marks, end)
	})
	if res.Calls == 0 || res.Errors > 0 || len(marks) != 2 || marks[0] || !marks[1] {
		t.Fatalf("%d calls, %d errors (%v), marks %v", res.Calls, res.Errors, res.FirstErr, marks)
	}
	if res.Pct(0.5) <= 0 || res.Pct(0.99) < res.Pct(0.5) || res.Rate() <= 0 {
		t.Errorf("p50 %v, p99 %v, rate %v", res.Pct(0.5), res.Pct(0.99), res.Rate())
	}
	w := m.Window(res)
	if w.Calls != res.Calls || w.BackCPU <= 0 || w.ClientCPU <= 0 || w.ProxyCPU != 0 || w.ServerCore <= 0 || w.P50 <= 0 {
		t.Errorf("window: %+v", w)
	}
}

// failing is a Client whose calls all fail.
type failing struct{}

func (failing) NewCaller() Caller { return func(context.Context) error { return errors.New("down") } }
func (failing) Close()            {}

func TestLoadPausesAfterErrors(t *testing.T) {
	f := failing{}
	res := Load{Conc: 1, Measure: 100 * time.Millisecond, ErrorPause: 10 * time.Millisecond}.Run(f, func(bool) {})
	if res.Calls != 0 || res.Errors == 0 || res.Errors > 11 || res.FirstErr == nil {
		t.Errorf("%d calls, %d errors (%v); want about 10 errors", res.Calls, res.Errors, res.FirstErr)
	}
	if err := WaitReady(f, 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("WaitReady: %v", err)
	}
}

func TestSelfOnCPUGrows(t *testing.T) {
	a := SelfOnCPU()
	for i := 0; time.Duration(SelfOnCPU()-a) < 5*time.Millisecond && i < 1e8; i++ {
	}
	if d := SelfOnCPU() - a; d <= 0 {
		t.Fatalf("on-CPU time did not grow: %d", d)
	}
}

func TestRunnerStartsAndStops(t *testing.T) {
	r, err := NewRunner("benchkit", t.TempDir(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := r.Start("sleeper", []string{"BENCHKIT=1"}, "sh", "-c", `echo "panic: boom"; echo "	github.com/meridian-gw/meridian/x.go:1"; echo $BENCHKIT; exec sleep 30`)
	if err != nil {
		t.Fatal(err)
	}
	run := &Running{Cmd: cmd}
	if run.ProxyPID() != cmd.Process.Pid || !Alive(cmd.Process.Pid) {
		t.Fatalf("not running: %d", run.ProxyPID())
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.LogTail("sleeper") == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := r.LogTail("sleeper"), " (panic: boom at github.com/meridian-gw/meridian/x.go:1)"; got != want {
		t.Errorf("LogTail = %q, want %q", got, want)
	}
	r.StopAll()
	if Alive(cmd.Process.Pid) {
		t.Error("still alive after StopAll")
	}
	if b, _ := os.ReadFile(filepath.Join(r.Out, "sleeper.log")); !strings.Contains(string(b), "\n1\n") {
		t.Errorf("the environment did not reach the server: %q", b)
	}
	if _, err := ParseConcs("1, 50"); err != nil {
		t.Error(err)
	}
	if _, err := ParseConcs("1,0"); err == nil {
		t.Error("ParseConcs accepted 0")
	}
}

func TestKeyPairsAndHAProxyConfig(t *testing.T) {
	ca, err := NewKeyPair(&x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := NewKeyPair(LoopbackServer(big.NewInt(2), "127.0.0.1", time.Hour), ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	combined, cfg := filepath.Join(dir, "combined.pem"), filepath.Join(dir, "haproxy.cfg")
	if err := WriteFiles(map[string][]byte{combined: leaf.Combined()}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteHAProxyConfig(cfg, 8443, combined, "127.0.0.1:8082", "proto h2"); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy not installed")
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c: %v\n%s", err, out)
	}
}

func TestParseTraces(t *testing.T) {
	in := `File: proxybench
Type: cpu
Duration: 10s, Total samples = 30ms ( 0.3%)
-----------+-------------------------------------------------------
      20ms   runtime.memmove
             crypto/tls.(*Conn).Write
             main.main
-----------+-------------------------------------------------------
      10ms   syscall.Syscall6
             internal/poll.(*FD).Write
-----------+-------------------------------------------------------
`
	got := ParseTraces(in)
	if len(got) != 2 || got[0].CPU != 20*time.Millisecond || len(got[0].Frames) != 3 || got[1].Frames[0] != "syscall.Syscall6" {
		t.Fatalf("ParseTraces = %+v", got)
	}
}

// TestProfileBetweenSignals takes a profile of this process the way the
// orchestrators have a server take one, and summarizes it.
func TestProfileBetweenSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go tool pprof")
	}
	path := filepath.Join(t.TempDir(), "self.cpu.pprof")
	p := &Profiled{Path: path, Life: 10 * time.Second}
	err := p.Run(func(ctx context.Context) error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		// The handler creates the file, then starts the profile.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("SIGUSR1 started no profile")
			}
		}
		for t0 := time.Now(); time.Since(t0) < 300*time.Millisecond; {
			_ = regexp.MustCompile(`^spin(ning)?$`).MatchString("spinning")
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGUSR2)
		if !WaitProfile(path) {
			return errors.New("no profile")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimSuffix(path, ".cpu.pprof") + ".allocs.pprof"); err != nil {
		t.Error(err)
	}
	ps := ProfileSummary{ExclusiveTitle: "Exclusive",
		Exclusive: []Category{{Name: "regexp", Re: regexp.MustCompile(`^regexp\.`)}, {Name: "other", Re: regexp.MustCompile(``)}},
		Inclusive: []Category{{Name: "the test", Re: regexp.MustCompile(`TestProfileBetweenSignals`)}},
		Top:       []string{"-top", "-nodecount=5"}, TopTitle: "top:", TopOmit: []string{"File:", "Build ID:", "Time:", "Type:"}}
	sum := ps.Summarize(os.Args[0], path)
	for _, want := range []string{"Exclusive (each sample counted once", "% | regexp |", "% | the test |", "\ntop:\n\n```\n"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	if strings.Contains(sum, "Build ID:") {
		t.Errorf("summary keeps the header:\n%s", sum)
	}
}
