package h2relay

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/net/http2"
)

// Defaults of Limits. Compare nginx (http2_max_concurrent_streams 128,
// headers in 32 KiB of buffers), HAProxy (100 streams, headers in a 16 KiB
// buffer), Envoy (60 KiB of headers, 1 MiB per_connection_buffer_limit_bytes)
// and x/net's server (1,000 resets in flight, 10,000 queued control frames):
// docs/gateway.md, "HTTP/2 limits".
const (
	DefaultMaxConcurrentStreams = 1000
	DefaultMaxHeaderListSize    = 64 << 10
	DefaultMaxQueuedBytes       = 1 << 20
	DefaultMaxResetsPerSecond   = 1000
	DefaultMaxPingsPerSecond    = 100
)

// Fixed limits.
const (
	// hardQueueFactor: a client connection with this many times
	// MaxQueuedBytes queued is cut off at once. Past MaxQueuedBytes the
	// reader takes no new requests, so only calls already open can add
	// more (their response headers and trailers).
	hardQueueFactor = 4
	// maxQueuedControl bounds the acknowledgements (SETTINGS, PING) a
	// peer makes us queue while it does not read: beyond it is a flood
	// (CVE-2019-9512, -9515), and the connection ends. x/net's number.
	maxQueuedControl = 10000
	// writeStallTimeout: a write that makes no progress this long means
	// the peer stopped reading (or the network is gone).
	writeStallTimeout = 30 * time.Second
	// maxSettingsPerFrame: x/net's server refuses larger SETTINGS frames
	// (and any with a setting twice), as we do: each costs a pass over
	// the connection's streams.
	maxSettingsPerFrame = 100
	// maxConnPending bounds the response DATA a client connection's
	// streams hold waiting for the client's flow-control windows (each is
	// bounded by the upstream stream's window, but a client has many
	// streams): past it, the call that adds more is ended.
	maxConnPending = 32 << 20
)

// Limits bound what one client connection can make the relay spend:
// memory, CPU and upstream streams. Zero fields take the defaults. The
// gateway and the edge set them from their --h2_* flags.
type Limits struct {
	// MaxConcurrentStreams is advertised to clients; streams beyond it
	// are refused. Default 1000.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's headers, decoded (RFC 9113
	// SETTINGS_MAX_HEADER_LIST_SIZE); larger requests are answered 431.
	// Default 64 KiB.
	MaxHeaderListSize uint32
	// MaxQueuedBytes bounds the bytes queued for a client that does not
	// read: DATA beyond it waits in its stream, uncredited, and the
	// connection reads no new requests, pings or settings from the client
	// until the queue drains below it (backpressure). A connection kept
	// above it for 30 s without progress, or that reaches 4× it, is
	// closed with GOAWAY ENHANCE_YOUR_CALM. Default 1 MiB, Envoy's
	// per_connection_buffer_limit_bytes.
	MaxQueuedBytes int
	// MaxResetsPerSecond bounds the streams a client may reset, or make
	// the relay reset, in a second: its RST_STREAMs, malformed or refused
	// requests, stream errors, oversized messages, calls rejected after
	// they were sent upstream (rapid reset, CVE-2023-44487). Default 1000.
	MaxResetsPerSecond int
	// MaxPingsPerSecond bounds the PING and SETTINGS frames a client may
	// send a second, beyond one PING for each DATA frame the relay sent
	// it (grpc-go clients ping on received data to size their windows).
	// Default 100.
	MaxPingsPerSecond int
}

// Validate reports a limit that is out of range.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxHeaderListSize != 0 && l.MaxHeaderListSize < 4<<10 {
		errs = append(errs, fmt.Errorf("--h2_max_header_list_size (MaxHeaderListSize) = %d: must be at least 4096 (4 KiB), or 0 for the default %d", l.MaxHeaderListSize, DefaultMaxHeaderListSize))
	}
	if l.MaxQueuedBytes < 0 || l.MaxQueuedBytes > 0 && l.MaxQueuedBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("--h2_max_queued_bytes (MaxQueuedBytes) = %d: must be at least 65536 (64 KiB), or 0 for the default %d", l.MaxQueuedBytes, DefaultMaxQueuedBytes))
	}
	if l.MaxResetsPerSecond < 0 {
		errs = append(errs, fmt.Errorf("--h2_max_resets_per_second (MaxResetsPerSecond) = %d: must be > 0, or 0 for the default %d", l.MaxResetsPerSecond, DefaultMaxResetsPerSecond))
	}
	if l.MaxPingsPerSecond < 0 {
		errs = append(errs, fmt.Errorf("--h2_max_pings_per_second (MaxPingsPerSecond) = %d: must be > 0, or 0 for the default %d", l.MaxPingsPerSecond, DefaultMaxPingsPerSecond))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero (or invalid) fields with the defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if l.MaxQueuedBytes <= 0 {
		l.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if l.MaxResetsPerSecond <= 0 {
		l.MaxResetsPerSecond = DefaultMaxResetsPerSecond
	}
	if l.MaxPingsPerSecond <= 0 {
		l.MaxPingsPerSecond = DefaultMaxPingsPerSecond
	}
	return l
}

// flood is a kind of abuse that ends a connection, for the stats (as
// Envoy counts each flood in a stat of its own).
type flood uint8

const (
	floodRapidReset   flood = iota // resets over MaxResetsPerSecond
	floodPing                      // PINGs over MaxPingsPerSecond
	floodSettings                  // SETTINGS frames over MaxPingsPerSecond
	floodSettingsSize              // SETTINGS frames over 100 settings or with one twice
	floodControl                   // acknowledgements queued for a peer that does not read
	floodQueue                     // queued bytes over 4× MaxQueuedBytes
	floodWriteStall                // over MaxQueuedBytes with no write progress for 30 s
	numFloods
)

var floodNames = [numFloods]string{"rapid_reset", "ping", "settings", "settings_size", "control_frames", "queued_bytes", "write_stall"}

func (f flood) String() string { return floodNames[f] }

// floodError ends a connection for abuse: a connError (its GOAWAY) that
// also says which limit it crossed.
type floodError struct {
	kind flood
	connError
}

func (e floodError) Unwrap() error { return e.connError }

func newFlood(kind flood, code http2.ErrCode, reason string) error {
	return floodError{kind, connError{code, reason}}
}

// rateWindow counts events in one-second windows.
type rateWindow struct {
	start time.Time
	n     int
}

// add counts one event at now and reports whether the window's count is
// now over max.
func (w *rateWindow) add(now time.Time, max int) bool {
	if now.Sub(w.start) >= time.Second {
		w.start, w.n = now, 0
	}
	w.n++
	return w.n > max
}

// pingBudget is a token bucket for the PING and SETTINGS frames a peer
// sends: it holds up to limit tokens, refills at limit a second, and each
// DATA frame sent to the peer adds one (a grpc-go peer pings at most once
// per DATA frame it receives, to estimate the bandwidth-delay product).
// Only DATA counts: response headers of rejected calls, which a peer can
// have for nothing, do not buy pings.
type pingBudget struct {
	tokens float64
	at     time.Time
	data   uint64 // the connection's DATA frame count at the last take
}

func (b *pingBudget) take(now time.Time, dataSent uint64, limit int) bool {
	lim := float64(limit)
	earned := float64(dataSent-b.data) + now.Sub(b.at).Seconds()*lim
	b.data, b.at = dataSent, now
	b.tokens = min(lim, b.tokens+earned)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// duplicateSettings reports whether a SETTINGS payload of at most
// maxSettingsPerFrame entries names a setting twice.
func duplicateSettings(p []byte) bool {
	var ids [maxSettingsPerFrame]uint16
	n := len(p) / 6
	for i := range n {
		ids[i] = uint16(p[6*i])<<8 | uint16(p[6*i+1])
	}
	s := ids[:n]
	slices.Sort(s)
	for i := 1; i < n; i++ {
		if s[i] == s[i-1] {
			return true
		}
	}
	return false
}
