package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"

	"github.com/meridian-gw/meridian/internal/filestamp"
	"sigs.k8s.io/yaml"
)

// APIKeys maps API keys to consumers. Keys are stored hashed (hex SHA-256,
// `meridian gateway hash-key KEY` prints one), so the file is not a secret
// worth stealing. The file is re-read when it changes.
//
//	keys:
//	- consumer: team-notebooks
//	  sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
type APIKeys struct {
	path    string
	current atomic.Pointer[apiKeyTable]
	stamp   string // of the file, at the last load
}

type apiKeyTable struct {
	byHash map[string]string // hash → consumer
}

type apiKeyFile struct {
	Keys []struct {
		Consumer string `json:"consumer"`
		SHA256   string `json:"sha256"`
	} `json:"keys"`
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// LoadAPIKeys reads the key file; an empty path gives an empty table.
func LoadAPIKeys(path string) (*APIKeys, error) {
	k := &APIKeys{path: path}
	k.current.Store(&apiKeyTable{byHash: map[string]string{}})
	if path == "" {
		return k, nil
	}
	if _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload re-reads the file if it changed; a bad file keeps the old table
// and returns the error. It reports whether a new table was loaded.
func (k *APIKeys) Reload() (bool, error) {
	if k.path == "" {
		return false, nil
	}
	if _, err := os.Stat(k.path); err != nil {
		return false, fmt.Errorf("api keys %s: %w", k.path, err)
	}
	stamp := filestamp.Of(k.path)
	if stamp == k.stamp {
		return false, nil
	}
	b, err := os.ReadFile(k.path)
	if err != nil {
		return false, fmt.Errorf("api keys %s: %w", k.path, err)
	}
	t, err := parseAPIKeys(b)
	if err != nil {
		return false, fmt.Errorf("api keys %s: %w", k.path, err)
	}
	k.current.Store(t)
	k.stamp = stamp
	return true, nil
}

func parseAPIKeys(b []byte) (*apiKeyTable, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var f apiKeyFile
	if err := json.Unmarshal(js, &f); err != nil {
		return nil, fmt.Errorf("want `keys: [{consumer: NAME, sha256: HEX}]`: %w", err)
	}
	t := &apiKeyTable{byHash: map[string]string{}}
	var errs []error
	for i, e := range f.Keys {
		if e.Consumer == "" {
			errs = append(errs, fmt.Errorf("keys[%d].consumer: empty", i))
		}
		if !hexHash.MatchString(e.SHA256) {
			errs = append(errs, fmt.Errorf("keys[%d].sha256: want 64 lowercase hex digits (meridian gateway hash-key KEY prints one)", i))
		}
		t.byHash[e.SHA256] = e.Consumer
	}
	return t, errors.Join(errs...)
}

// Consumer returns the consumer owning key.
func (k *APIKeys) Consumer(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	// Looking up the SHA-256 of the key leaks nothing useful through
	// timing: a caller cannot steer the hash towards a stored one.
	c, ok := k.current.Load().byHash[HashKey(key)]
	return c, ok
}
