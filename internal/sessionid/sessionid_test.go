package sessionid

import "testing"

func TestFromHost(t *testing.T) {
	const suffix = ".notebooks.example.com"
	id := "us-central1-abcdefghijklmnopqrst"
	for _, tc := range []struct {
		host, id string
		onSuffix bool
	}{
		{id + suffix, id, true},
		{id + suffix + ":8443", id, true},
		{"US-Central1-ABCDEFGHIJKLMNOPQRST.Notebooks.Example.com", id, true}, // host names are case-insensitive
		{id + suffix + ".", id, true},                                        // fully qualified
		{"foo" + suffix, "", true},                                           // on the suffix, not an id: no such notebook
		{"x." + id + suffix, "", true},
		{"x7k2m3abcdefghijklmnopqrst" + suffix, "", true}, // no region
		{suffix, "", true},
		{"notebooks.example.com", "", false},
		{id + ".example.com", "", false},
		{id + suffix + ".evil.example", "", false},
		{"127.0.0.1:8443", "", false},
		{"[::1]:8443", "", false},
	} {
		got, on := FromHost(tc.host, suffix)
		if got != tc.id || on != tc.onSuffix {
			t.Errorf("FromHost(%q) = %q, %v; want %q, %v", tc.host, got, on, tc.id, tc.onSuffix)
		}
	}
	if got, on := FromHost(id+suffix, ""); got != "" || on {
		t.Errorf("with no suffix (the host form off): %q, %v; want nothing", got, on)
	}
}

func TestCheckHostSuffix(t *testing.T) {
	for _, ok := range []string{"", ".notebooks.example.com", ".nb.localhost", ".a-b.c0.example"} {
		if err := CheckHostSuffix(ok); err != nil {
			t.Errorf("%q: %v; want it valid", ok, err)
		}
	}
	for _, bad := range []string{"notebooks.example.com", ".com", ".Notebooks.example.com", ".notebooks..example.com",
		".notebooks.example.com.", ".notebooks.example.com:443", ".*.example.com", ".-a.example.com", ". example.com"} {
		if err := CheckHostSuffix(bad); err == nil {
			t.Errorf("%q: valid; want an error", bad)
		}
	}
}
