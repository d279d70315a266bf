package forwarded

import "testing"

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		prior []string
		peer  string
		want  string
	}{
		{nil, "10.0.0.1", "10.0.0.1"},
		{[]string{"203.0.113.7"}, "10.0.0.1", "203.0.113.7, 10.0.0.1"},
		// Every line counts: a client's two header lines are not one.
		{[]string{"203.0.113.7", "198.51.100.2, 192.0.2.9"}, "10.0.0.1", "203.0.113.7, 198.51.100.2, 192.0.2.9, 10.0.0.1"},
		{[]string{"203.0.113.7"}, "", "203.0.113.7"},
		{nil, "", ""},
	} {
		if got := For(tc.prior, tc.peer); got != tc.want {
			t.Errorf("For(%q, %q) = %q, want %q", tc.prior, tc.peer, got, tc.want)
		}
	}
}
