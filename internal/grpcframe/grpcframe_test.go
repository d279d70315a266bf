package grpcframe

import (
	"bytes"
	"errors"
	"testing"
)

func TestWriteThenNext(t *testing.T) {
	var b bytes.Buffer
	_ = Write(&b, 0, []byte("hello"))
	_ = Write(&b, FlagTrailers, []byte("grpc-status: 0\r\n"))
	_ = Write(&b, 0, nil)
	rest := b.Bytes()
	var got []string
	var flags []byte
	for len(rest) > 0 {
		f, msg, r, err := Next(rest)
		if err != nil {
			t.Fatal(err)
		}
		got, flags, rest = append(got, string(msg)), append(flags, f), r
	}
	if len(got) != 3 || got[0] != "hello" || got[1] != "grpc-status: 0\r\n" || got[2] != "" || flags[1] != FlagTrailers {
		t.Fatalf("frames %q flags %v", got, flags)
	}
	if First(b.Bytes()) == nil || string(First(b.Bytes())) != "hello" {
		t.Fatalf("First = %q", First(b.Bytes()))
	}
}

func TestNextRefusesTruncatedFrames(t *testing.T) {
	for _, b := range [][]byte{{0, 0, 0}, {0, 0, 0, 0, 9, 'a'}, {0, 0xff, 0xff, 0xff, 0xff}} {
		if _, _, _, err := Next(b); !errors.Is(err, ErrTruncated) {
			t.Errorf("Next(%v) = %v, want ErrTruncated", b, err)
		}
		if First(b) != nil {
			t.Errorf("First(%v) = %v, want nil", b, First(b))
		}
	}
}

func FuzzNext(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			_, msg, rest, err := Next(b)
			if err != nil {
				return
			}
			if len(rest) >= len(b) || len(msg) > len(b) {
				t.Fatalf("Next made no progress on %v", b)
			}
			b = rest
		}
	})
}
