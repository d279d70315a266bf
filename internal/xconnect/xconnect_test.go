package xconnect_test

import (
	"testing"

	"github.com/meridian-gw/meridian/internal/h2mux"
	_ "github.com/meridian-gw/meridian/internal/xconnect"
)

// The package's init runs before x/net's and net/http's read GODEBUG,
// although this test imports x/net (through h2mux) too.
func TestImportingItEnablesExtendedConnect(t *testing.T) {
	if !h2mux.ExtendedConnect() {
		t.Fatal("x/net's HTTP/2 server does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL: the package initialized after it")
	}
}
