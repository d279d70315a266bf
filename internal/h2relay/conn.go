package h2relay

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Protocol defaults (RFC 9113 §6.5.2) and ours.
const (
	defaultWindow    = 65535
	defaultMaxFrame  = 16384
	defaultTableSize = 4096
	// maxFrameRead is the largest frame we accept: we never advertise a
	// larger SETTINGS_MAX_FRAME_SIZE than the default.
	maxFrameRead = defaultMaxFrame
	readBufSize  = 64 << 10
	// Streams assumed allowed before the peer's SETTINGS arrive.
	initialPeerStreams = 100
	maxStreamID        = 1<<31 - 1
)

// settings are what one side of the relay advertises.
type settings struct {
	streamWindow  uint32 // SETTINGS_INITIAL_WINDOW_SIZE
	connWindow    uint32 // raised by a WINDOW_UPDATE after SETTINGS
	maxStreams    uint32 // SETTINGS_MAX_CONCURRENT_STREAMS (server side)
	maxHeaderList uint32 // SETTINGS_MAX_HEADER_LIST_SIZE
}

// conn is one HTTP/2 connection: the client's (server side) or one to an
// upstream (client side). One goroutine reads and handles frames
// (read.go); one writes whatever the others appended to wbuf, so that
// frames from many streams leave in one write (write.go). Flow control is
// in flow.go, streams in stream.go, and what only one side does in
// clientconn.go and upstreamconn.go; this file holds the state and how a
// connection starts and ends.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	client bool      // we dialed it (an upstream connection)
	srv    *Server   // server side
	up     *Upstream // client side
	set    settings
	lim    Limits        // with defaults filled in
	stall  time.Duration // writeStallTimeout, shorter in tests

	// Reader goroutine only.
	dec        *hpack.Decoder
	fields     []hpack.HeaderField
	fieldsSize uint32
	block      []byte // header block being assembled from CONTINUATIONs
	blockID    uint32
	blockEnd   bool // the HEADERS carried END_STREAM
	inBlock    bool
	pingBudget pingBudget

	mu            sync.Mutex
	wbuf          []byte
	enc           *hpack.Encoder
	encBuf        bytes.Buffer
	streams       map[uint32]*stream
	pendList      []*stream // streams with data waiting for window
	nextID        uint32    // client side: next stream id
	lastPeerID    uint32    // server side: highest stream id the peer opened
	sendWin       int64     // connection send window the peer granted
	peerInitWin   int64
	peerMaxFrame  int
	peerStreams   uint32
	recvWin       int64 // how much more the peer may send on the connection
	recvUnacked   int64
	gotSettings   bool
	goingAway     bool   // GOAWAY sent or received: no new streams
	peerLastID    uint32 // from the peer's GOAWAY
	closing       bool   // the writer closes the socket after its next write
	closed        bool   // torn down
	closeErr      error
	lastActive    time.Time // last time the stream count went to zero, or a frame arrived
	pingSent      time.Time // keepalive ping outstanding since (client side)
	dataSent      uint64    // DATA frames with a payload written, for pingBudget
	resets        rateWindow
	control       int   // acknowledgements queued since the writer last took wbuf
	inflight      int   // bytes the writer took from wbuf and has not written yet
	readerWaiting bool  // the reader waits on room for the queue to drain
	cutOff        bool  // a flood error is ending the connection
	pendBytes     int64 // DATA waiting in the streams' pend
	hk            *time.Timer
	hkCount       uint64 // frames read at the last housekeeping
	hkQuiet       time.Time

	// active counts streams open or reserved (client side), for the
	// upstream's picker.
	active    atomic.Int32
	readCount atomic.Uint64 // frames read, for keepalive

	hostOnce sync.Once // server side: the client's host, for Call.RemoteHost
	host     string

	room sync.Cond // on mu: the write queue drained (or the connection ended)
	wake chan struct{}
	done chan struct{}
}

func newConn(nc net.Conn, client bool, set settings, lim Limits) *conn {
	now := time.Now()
	lim = lim.withDefaults()
	c := &conn{
		nc: nc, br: bufio.NewReaderSize(nc, readBufSize), client: client, set: set, lim: lim, stall: writeStallTimeout,
		streams: map[uint32]*stream{}, sendWin: defaultWindow, peerInitWin: defaultWindow,
		peerMaxFrame: defaultMaxFrame, peerStreams: initialPeerStreams, recvWin: defaultWindow,
		wake: make(chan struct{}, 1), done: make(chan struct{}), lastActive: now,
		pingBudget: pingBudget{tokens: float64(lim.MaxPingsPerSecond), at: now},
	}
	c.room.L = &c.mu
	if client {
		c.nextID = 1
	}
	c.dec = hpack.NewDecoder(defaultTableSize, c.emitField)
	c.dec.SetMaxStringLength(int(set.maxHeaderList))
	c.enc = hpack.NewEncoder(&c.encBuf)
	return c
}

const settingNoRFC7540Priorities http2.SettingID = 0x9

// start writes our SETTINGS (and the preface, client side) and the
// connection window increase, then runs the writer.
func (c *conn) start() {
	c.mu.Lock()
	if c.client {
		c.wbuf = append(c.wbuf, http2.ClientPreface...)
	}
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: c.set.streamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: c.set.maxHeaderList},
	}
	if c.client {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		// No priorities (RFC 9113 §5.3.2), as net/http's server says: a
		// client sharing ports with it may refuse a later change.
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.set.maxStreams},
			http2.Setting{ID: settingNoRFC7540Priorities, Val: 1})
	}
	c.wbuf = appendSettings(c.wbuf, s...)
	if c.set.connWindow > defaultWindow {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, c.set.connWindow-defaultWindow)
		c.recvWin = int64(c.set.connWindow)
	}
	c.hk = time.AfterFunc(c.tickEvery(), c.housekeepTick)
	c.mu.Unlock()
	go c.writeLoop()
	c.kick()
}

// fail ends the connection: every stream's call learns of it.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var ce connError
	if errors.As(err, &ce) && !c.closing {
		// Tell the peer why, best effort, before closing.
		b := appendGoAway(nil, c.lastPeerID, ce.code, ce.reason)
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write(b)
	}
	c.closed, c.closeErr = true, err
	c.room.Broadcast()
	if c.srv != nil {
		c.srv.count(err)
	}
	if c.hk != nil {
		c.hk.Stop()
	}
	reached := c.gotSettings
	streams := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	for _, s := range streams {
		c.removeLocked(s)
	}
	c.pendList = nil
	c.mu.Unlock()
	close(c.done)
	c.nc.Close()
	c.gone()
	for _, s := range streams {
		if s.front {
			s.call.onClientGone()
		} else {
			s.call.onUpstreamLost(s, reached, err)
		}
	}
}

// gone tells the connection's owner it takes no more streams.
func (c *conn) gone() {
	if c.client {
		c.up.connGone(c)
	} else if c.srv != nil {
		c.srv.connGone(c)
	}
}

// closeGracefully closes a connection that has no streams left after
// GOAWAY: the writer writes what is queued, then closes the socket.
func (c *conn) closeGracefully() {
	c.mu.Lock()
	if c.closed || c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.mu.Unlock()
	c.kick()
	c.gone()
	// Bound the wait for a peer that stopped reading.
	time.AfterFunc(5*time.Second, func() { c.nc.Close() })
}

// maybeCloseIdle closes a connection that is going away once its last
// stream is done.
func (c *conn) maybeCloseIdle() {
	c.mu.Lock()
	last := len(c.streams) == 0 && c.goingAway
	c.mu.Unlock()
	if last {
		c.closeGracefully()
	}
}

// goAway sends GOAWAY (server side: no streams past those opened) and
// closes the connection once its streams are done.
func (c *conn) goAway(code http2.ErrCode, debug string) {
	c.mu.Lock()
	if c.closed || c.closing || c.goingAway {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	c.wbuf = appendGoAway(c.wbuf, c.lastPeerID, code, debug)
	c.mu.Unlock()
	c.kick()
	c.maybeCloseIdle()
}

// Housekeeping, once per tickInterval on a timer: idle
// connections close, and an upstream that stops answering keepalive
// pings is given up on.
const tickInterval = 5 * time.Second

func (c *conn) housekeep(now time.Time) {
	c.mu.Lock()
	if n := c.readCount.Load(); n != c.hkCount || c.hkQuiet.IsZero() {
		c.hkCount, c.hkQuiet = n, now
	}
	idle := len(c.streams) == 0 && !c.closed && now.Sub(c.lastActive) > c.idleTimeout()
	var dead bool
	if c.client && !c.closed {
		switch {
		case !c.pingSent.IsZero():
			dead = now.Sub(c.pingSent) > c.up.keepaliveTimeout()
		case len(c.streams) > 0 && now.Sub(c.hkQuiet) >= c.up.keepaliveTime():
			c.pingSent = now
			c.wbuf = appendPing(c.wbuf, false, [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'})
		}
	}
	c.mu.Unlock()
	switch {
	case dead:
		c.fail(errors.New("h2relay: upstream did not answer a keepalive ping"))
	case idle:
		c.goAway(http2.ErrCodeNo, "idle")
	default:
		c.kick()
	}
}

// housekeepTick runs housekeeping on a timer of its own, not on the
// writer, which a peer that stops reading can block.
func (c *conn) housekeepTick() {
	c.housekeep(time.Now())
	c.mu.Lock()
	if !c.closed {
		c.hk.Reset(c.tickEvery())
	}
	c.mu.Unlock()
}

// tickEvery is how often housekeeping runs: every tickInterval, or often
// enough for short timeouts to be kept to within a quarter.
func (c *conn) tickEvery() time.Duration {
	d := min(tickInterval, c.idleTimeout()/4)
	if c.client {
		d = min(d, c.up.keepaliveTime()/4, c.up.keepaliveTimeout()/2)
	}
	return max(d, time.Millisecond)
}

func (c *conn) idleTimeout() time.Duration {
	if c.client {
		return c.up.idleTimeout()
	}
	return c.srv.idleTimeout()
}
