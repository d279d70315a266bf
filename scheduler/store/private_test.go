package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/meridian-gw/meridian/scheduler/store"
)

// TestSQLiteFilesArePrivate: the store holds every session's notebook
// token, and workloads (users' code) run on the same machine; a new
// database, its directory and its -wal and -shm files are this account's
// alone (SQLite's default would be 0644).
func TestSQLiteFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	path := filepath.Join(dir, "sessions.db")
	st, err := store.Open(ctxT(t), "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(ctxT(t), nil, func(tx store.Tx) error { return tx.InsertSession(ctxT(t), newSession("s1", "alice", "")) }); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o; want %04o", filepath.Base(p), got, want)
		}
	}
}
