package v1alpha1

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestPublishedSliceName(t *testing.T) {
	for _, tc := range []struct {
		mcs, cluster string
		n            int
		want         string
	}{
		{"session-scheduler-svc", "us-1", 0, "session-scheduler-svc-us-1"},
		{"session-scheduler-svc", "us-1", 2, "session-scheduler-svc-us-1-2"},
	} {
		if got := PublishedSliceName(tc.mcs, tc.cluster, tc.n); got != tc.want {
			t.Errorf("PublishedSliceName(%q, %q, %d) = %q; want %q", tc.mcs, tc.cluster, tc.n, got, tc.want)
		}
	}
}

// TestPublishedSliceNameOfLongNamesIsValidAndUnique: names at the limits
// still make valid, distinct object names.
func TestPublishedSliceNameOfLongNamesIsValidAndUnique(t *testing.T) {
	long := strings.Repeat("a", 200)
	seen := map[string]bool{}
	for _, c := range []struct {
		mcs, cluster string
		n            int
	}{
		{long, long, 0}, {long, long, 1}, {long, long + "b", 0},
		// A cut that would end in '-' or '.': trimmed before the hash.
		{strings.Repeat("b", 231), strings.Repeat("c.", 20), 0},
		{strings.Repeat("b", 232), strings.Repeat("-", 40) + "x", 0},
	} {
		name := PublishedSliceName(c.mcs, c.cluster, c.n)
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("PublishedSliceName(%d+%d chars, %d) = %q: %v", len(c.mcs), len(c.cluster), c.n, name, errs)
		}
		if seen[name] {
			t.Errorf("PublishedSliceName gave %q twice", name)
		}
		seen[name] = true
	}
}
