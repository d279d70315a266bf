package bulkbuf

import (
	"sync"
	"testing"
)

func TestPoolLendsWithinItsBudget(t *testing.T) {
	p := New(256<<10, 1<<20) // four buffers
	var got [][]byte
	for range 6 {
		if b := p.Get(); b != nil {
			if len(b) != 256<<10 {
				t.Fatalf("a buffer of %d bytes, want %d", len(b), 256<<10)
			}
			got = append(got, b)
		}
	}
	if len(got) != 4 || p.Lent() != 4 {
		t.Fatalf("lent %d buffers (Lent says %d) of a 1 MiB budget, want 4", len(got), p.Lent())
	}
	p.Put(got[0])
	if b := p.Get(); b == nil {
		t.Fatal("no buffer after one came back")
	}
	for _, b := range got[1:] {
		p.Put(b)
	}
	if p.Lent() != 1 {
		t.Fatalf("Lent = %d after all but one came back", p.Lent())
	}
}

func TestPoolWithoutBudgetLendsNone(t *testing.T) {
	for _, p := range []*Pool{New(256<<10, 0), New(256<<10, 100<<10), nil} {
		if b := p.Get(); b != nil {
			t.Fatalf("a pool with no room lent %d bytes", len(b))
		}
	}
}

// Many transfers at once never hold more than the budget.
func TestPoolBoundsConcurrentBorrowers(t *testing.T) {
	p := New(64<<10, 3*64<<10)
	var (
		mu       sync.Mutex
		out, top int
		wg       sync.WaitGroup
	)
	for range 32 {
		wg.Go(func() {
			for range 200 {
				b := p.Get()
				if b == nil {
					continue
				}
				mu.Lock()
				out++
				top = max(top, out)
				mu.Unlock()
				b[0] = 1 // the race detector sees two holders of one buffer
				mu.Lock()
				out--
				mu.Unlock()
				p.Put(b)
			}
		})
	}
	wg.Wait()
	if top > 3 || top == 0 {
		t.Fatalf("at most %d buffers were out at once, want 1 to 3", top)
	}
}

// A dropped buffer frees its room but is never lent again.
func TestDroppedBufferIsNotLentAgain(t *testing.T) {
	p := New(4<<10, 4<<10) // one buffer
	b := p.Get()
	b[0] = 'x'
	p.Drop(b)
	if p.Lent() != 0 {
		t.Fatalf("Lent = %d after Drop; want the room back", p.Lent())
	}
	for range 100 { // sync.Pool may hold on to what it is given; a dropped buffer is never given
		c := p.Get()
		if c == nil {
			t.Fatal("no buffer after the dropped one's room came back")
		}
		if &c[0] == &b[0] {
			t.Fatal("the dropped buffer was lent again")
		}
		p.Put(c)
	}
}
