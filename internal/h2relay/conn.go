package h2relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"runtime"
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
	// A writer that wakes to less than this yields once so that more
	// frames can join the same write (as grpc-go's loopy writer does).
	smallBatch = 4 << 10
	// Streams assumed allowed before the peer's SETTINGS arrive.
	initialPeerStreams = 100
	maxStreamID        = 1<<31 - 1
	// writeChunk is how much one write may take before its deadline is
	// renewed, so that a slow but live peer is not cut off.
	writeChunk = 64 << 10
)

// settings are what one side of the relay advertises.
type settings struct {
	streamWindow  uint32 // SETTINGS_INITIAL_WINDOW_SIZE
	connWindow    uint32 // raised by a WINDOW_UPDATE after SETTINGS
	maxStreams    uint32 // SETTINGS_MAX_CONCURRENT_STREAMS (server side)
	maxHeaderList uint32 // SETTINGS_MAX_HEADER_LIST_SIZE
}

// conn is one HTTP/2 connection: the client's (server side) or one to an
// upstream (client side). One goroutine reads and handles frames; one
// writes whatever the others appended to wbuf, so that frames from many
// streams leave in one write.
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

func (c *conn) emitField(f hpack.HeaderField) {
	c.fieldsSize += f.Size()
	if c.fieldsSize <= c.set.maxHeaderList {
		c.fields = append(c.fields, f)
	}
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

// kick wakes the writer.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) writeLoop() {
	var out []byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		if len(c.wbuf) > 0 && len(c.wbuf) < smallBatch {
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		out, c.wbuf = c.wbuf, out[:0]
		c.control, c.inflight = 0, len(out)
		closing := c.closing
		c.mu.Unlock()
		if len(out) > 0 {
			if err := c.write(out); err != nil {
				c.fail(c.writeFailed(err))
				return
			}
		}
		if closing {
			// The last frames (a GOAWAY) are out: closing the socket ends
			// the reader, which tears the connection down (a reader
			// waiting for the queue to drain is woken to find it closing).
			c.nc.Close()
			c.mu.Lock()
			c.wroteLocked(0)
			c.mu.Unlock()
			return
		}
		if cap(out) > 2*c.lim.MaxQueuedBytes {
			out = nil // do not keep a burst's buffer for good
		}
		// Data that waited for room in the write queue can go now.
		c.mu.Lock()
		c.wroteLocked(0)
		var flushed []*stream
		if len(c.pendList) > 0 {
			flushed = c.flushPendingLocked(nil)
		}
		c.mu.Unlock()
		if len(flushed) > 0 {
			c.kick()
			c.afterFlush(flushed)
		}
	}
}

// write writes b, renewing the deadline for each chunk: a peer that
// takes nothing for the stall timeout fails the connection.
func (c *conn) write(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.stall))
		if _, err := c.nc.Write(b[:n]); err != nil {
			return err
		}
		if b = b[n:]; len(b) > 0 {
			// A long write: let a waiting reader see the progress. (The
			// last chunk's is seen after the write.)
			c.mu.Lock()
			c.wroteLocked(len(b))
			c.mu.Unlock()
		}
	}
	return nil
}

// wroteLocked records that the writer has left bytes of what it took
// to write, and wakes a reader waiting for the queue to drain.
func (c *conn) wroteLocked(left int) {
	c.inflight = left
	if c.readerWaiting {
		c.room.Broadcast()
	}
}

// writeFailed is the error a failed write ends the connection with: a
// client that read nothing for the stall timeout while more than
// MaxQueuedBytes waited for it is a flood of its own making.
func (c *conn) writeFailed(err error) error {
	if c.client || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	c.mu.Lock()
	queued := c.queuedLocked()
	c.mu.Unlock()
	if queued <= c.lim.MaxQueuedBytes {
		return err
	}
	return newFlood(floodWriteStall, http2.ErrCodeEnhanceYourCalm,
		"the client read nothing for "+c.stall.String()+" with "+itoa(queued)+" bytes queued for it")
}

// queuedLocked is what waits to be written to the peer.
func (c *conn) queuedLocked() int { return len(c.wbuf) + c.inflight }

// roomLocked is how much DATA the write queue still takes.
func (c *conn) roomLocked() int64 { return int64(c.lim.MaxQueuedBytes - len(c.wbuf)) }

// waitRoomLocked holds the reader of a client connection while more than
// MaxQueuedBytes is queued for the client: a client that does not read
// gets no new requests, pings or settings read (and answered) either.
// It releases c.mu while it waits; the writer wakes it as the queue
// drains, and fail and the writer's last write when it closes.
func (c *conn) waitRoomLocked() error {
	if c.client {
		return nil
	}
	for c.queuedLocked() > c.lim.MaxQueuedBytes && !c.closed && !c.closing {
		if err := c.queueCapLocked(); err != nil {
			return err
		}
		c.readerWaiting = true
		c.room.Wait()
		c.readerWaiting = false
	}
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// queueCapLocked is the flood error of a client connection whose queue
// reached hardQueueFactor × MaxQueuedBytes, if it did.
func (c *conn) queueCapLocked() error {
	if c.client || c.queuedLocked() <= hardQueueFactor*c.lim.MaxQueuedBytes {
		return nil
	}
	return newFlood(floodQueue, http2.ErrCodeEnhanceYourCalm,
		"more than "+itoa(hardQueueFactor*c.lim.MaxQueuedBytes)+" bytes queued for a client that does not read")
}

// checkQueueLocked cuts off a client connection whose queue reached its
// hard cap through frames the reader did not cause (responses of calls
// already open). The connection ends on a goroutine of its own: the
// caller may hold a call's lock, which ending it takes.
func (c *conn) checkQueueLocked() {
	if c.cutOff || c.closed {
		return
	}
	if err := c.queueCapLocked(); err != nil {
		c.cutOff = true
		go c.fail(err)
	}
}

// controlLocked counts an acknowledgement queued for the peer.
func (c *conn) controlLocked() error {
	if c.control++; c.control > maxQueuedControl {
		return newFlood(floodControl, http2.ErrCodeEnhanceYourCalm, "too many control frames queued: the peer does not read")
	}
	return nil
}

// readLoop handles frames until the connection fails.
func (c *conn) readLoop() {
	err := c.readFrames()
	c.fail(err)
}

func (c *conn) readFrames() error {
	if !c.client {
		if err := c.readPreface(); err != nil {
			return err
		}
	}
	for {
		hb, err := c.br.Peek(frameHeaderLen)
		if err != nil {
			return err
		}
		h := parseFrameHeader(hb)
		if h.length > maxFrameRead {
			return connError{http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"}
		}
		buf, err := c.br.Peek(frameHeaderLen + h.length)
		if err != nil {
			return err
		}
		c.readCount.Add(1)
		err = c.handleFrame(h, buf[frameHeaderLen:])
		_, _ = c.br.Discard(frameHeaderLen + h.length)
		if err != nil {
			return err
		}
	}
}

func (c *conn) readPreface() error {
	p := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if string(p) != http2.ClientPreface {
		return connError{http2.ErrCodeProtocol, "bad client preface"}
	}
	return nil
}

func (c *conn) handleFrame(h frameHeader, p []byte) error {
	if c.inBlock && h.typ != http2.FrameContinuation {
		return connError{http2.ErrCodeProtocol, "expected CONTINUATION"}
	}
	switch h.typ {
	case http2.FrameData:
		return c.onData(h, p)
	case http2.FrameHeaders:
		return c.onHeaders(h, p)
	case http2.FrameContinuation:
		return c.onContinuation(h, p)
	case http2.FrameRSTStream:
		return c.onRSTStream(h, p)
	case http2.FrameSettings:
		return c.onSettings(h, p)
	case http2.FramePing:
		return c.onPing(h, p)
	case http2.FrameGoAway:
		return c.onGoAway(h, p)
	case http2.FrameWindowUpdate:
		return c.onWindowUpdate(h, p)
	case http2.FramePriority:
		if h.length != 5 {
			return connError{http2.ErrCodeFrameSize, "PRIORITY frame of the wrong size"}
		}
		return nil
	case http2.FramePushPromise:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE is disabled"}
	}
	return nil // unknown frame types are ignored (RFC 9113 §4.1)
}

// onHeaders starts a header block; complete blocks are decoded at once.
func (c *conn) onHeaders(h frameHeader, p []byte) error {
	if h.stream == 0 {
		return connError{http2.ErrCodeProtocol, "HEADERS on stream 0"}
	}
	frag, err := headerFragment(h, p)
	if err != nil {
		return err
	}
	c.blockID, c.blockEnd = h.stream, h.flags&http2.FlagHeadersEndStream != 0
	if h.flags&http2.FlagHeadersEndHeaders != 0 {
		return c.decodeBlock(frag)
	}
	c.inBlock = true
	c.block = append(c.block[:0], frag...)
	return nil
}

func (c *conn) onContinuation(h frameHeader, p []byte) error {
	if !c.inBlock || h.stream != c.blockID {
		return connError{http2.ErrCodeProtocol, "unexpected CONTINUATION"}
	}
	if len(c.block)+len(p) > int(c.set.maxHeaderList) {
		return connError{http2.ErrCodeEnhanceYourCalm, "header block larger than SETTINGS_MAX_HEADER_LIST_SIZE"}
	}
	c.block = append(c.block, p...)
	if h.flags&http2.FlagHeadersEndHeaders == 0 {
		return nil
	}
	c.inBlock = false
	err := c.decodeBlock(c.block)
	if cap(c.block) > 64<<10 {
		c.block = nil
	}
	return err
}

// decodeBlock decodes a whole header block (always, to keep the HPACK
// state in step with the peer's) and hands it to the side's handler.
func (c *conn) decodeBlock(block []byte) error {
	c.fields, c.fieldsSize = c.fields[:0], 0
	if _, err := c.dec.Write(block); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	if err := c.dec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	tooLarge := c.fieldsSize > c.set.maxHeaderList
	if c.client {
		return c.onResponseHeaders(c.blockID, c.fields, c.blockEnd, tooLarge)
	}
	return c.onRequestHeaders(c.blockID, c.fields, c.blockEnd, tooLarge)
}

// onData accounts for flow control and hands the payload to the stream's
// call, which forwards it or keeps it.
func (c *conn) onData(h frameHeader, p []byte) error {
	if h.stream == 0 {
		return connError{http2.ErrCodeProtocol, "DATA on stream 0"}
	}
	data, err := dataPayload(h, p)
	if err != nil {
		return err
	}
	n := int64(h.length)
	pad := n - int64(len(data))
	end := h.flags&http2.FlagDataEndStream != 0
	c.mu.Lock()
	if c.recvWin < n {
		c.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	c.recvWin -= n
	if c.client && c.creditConnLocked(n) { // see creditLocked
		defer c.kick()
	}
	s := c.streams[h.stream]
	if s == nil {
		idle := c.idleLocked(h.stream)
		c.creditLocked(nil, n)
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		return nil // a stream we already closed: frames in flight
	}
	if s.recvEnd { // half-closed (remote): RFC 9113 §5.1
		c.creditLocked(nil, n)
		c.mu.Unlock()
		return c.streamError(s, http2.ErrCodeStreamClosed)
	}
	if s.recvWin < n {
		c.creditLocked(nil, n)
		c.mu.Unlock()
		return c.streamError(s, http2.ErrCodeFlowControl)
	}
	s.recvWin -= n
	if pad > 0 {
		c.creditLocked(s, pad) // padding is never forwarded
	}
	if end {
		s.recvEnd = true
	}
	c.mu.Unlock()
	if s.front {
		if s.call.onRequestData(data, end) {
			return c.countReset() // the call was refused: a reset the client caused
		}
	} else {
		s.call.onResponseData(s, data, end)
	}
	return nil
}

func (c *conn) onRSTStream(h frameHeader, p []byte) error {
	if h.length != 4 {
		return connError{http2.ErrCodeFrameSize, "RST_STREAM of the wrong size"}
	}
	if h.stream == 0 {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on stream 0"}
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(p))
	c.mu.Lock()
	s := c.streams[h.stream]
	idle := s == nil && c.idleLocked(h.stream)
	c.mu.Unlock()
	if idle {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	if s == nil {
		return nil
	}
	if s.front {
		if err := c.countReset(); err != nil {
			return err
		}
		s.call.onClientReset(code)
	} else {
		s.call.onUpstreamReset(s, code)
	}
	return nil
}

// idleLocked reports whether stream id was never opened (RFC 9113 §5.1):
// any frame but HEADERS and PRIORITY on it is a connection error.
func (c *conn) idleLocked(id uint32) bool {
	if c.client {
		return id >= c.nextID || id%2 == 0
	}
	return id > c.lastPeerID || id%2 == 0
}

// streamError resets s for a stream-level error of the peer's. A client's
// errors count as resets: making the relay reset streams is as cheap a
// way to open and cancel upstream calls as RST_STREAM is.
func (c *conn) streamError(s *stream, code http2.ErrCode) error {
	s.call.resetStream(s, code)
	if c.client {
		return nil
	}
	return c.countReset()
}

// countReset bounds how many streams a client may reset a second, or
// make the relay reset: a flood of HEADERS+RST_STREAM makes upstreams
// work for nothing (the "rapid reset" attack, CVE-2023-44487). Every
// reset a client can provoke counts, whatever the reason.
func (c *conn) countReset() error {
	if c.client {
		return nil
	}
	c.mu.Lock()
	over := c.resets.add(time.Now(), c.lim.MaxResetsPerSecond)
	c.mu.Unlock()
	if over {
		return newFlood(floodRapidReset, http2.ErrCodeEnhanceYourCalm, "too many stream resets")
	}
	return nil
}

// countResetAsync is countReset off the reader goroutine (a handler's,
// an upstream connection's reader): over the limit, the connection ends
// on a goroutine of its own, since the caller may hold a call's lock.
func (c *conn) countResetAsync() {
	if err := c.countReset(); err != nil {
		go c.fail(err)
	}
}

func (c *conn) onSettings(h frameHeader, p []byte) error {
	if h.stream != 0 {
		return connError{http2.ErrCodeProtocol, "SETTINGS on a stream"}
	}
	if h.flags&http2.FlagSettingsAck != 0 {
		if h.length != 0 {
			return connError{http2.ErrCodeFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if h.length%6 != 0 {
		return connError{http2.ErrCodeFrameSize, "SETTINGS of the wrong size"}
	}
	if !c.client && (len(p)/6 > maxSettingsPerFrame || duplicateSettings(p)) {
		// Not in the RFC; x/net's server hangs up on these too.
		return newFlood(floodSettingsSize, http2.ErrCodeProtocol, "SETTINGS frame with more than 100 settings, or a setting twice")
	}
	v, err := parseSettings(p)
	if err != nil {
		return err
	}
	now := time.Now()
	var flushed []*stream
	c.mu.Lock()
	if err := c.waitRoomLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if !c.pingBudget.take(now, c.dataSent, c.lim.MaxPingsPerSecond) {
		c.mu.Unlock()
		return newFlood(floodSettings, http2.ErrCodeEnhanceYourCalm, "too many SETTINGS frames")
	}
	if v.has&(1<<http2.SettingInitialWindowSize) != 0 {
		// One pass over the streams per frame at most.
		delta := int64(v.initialWindow) - c.peerInitWin
		c.peerInitWin = int64(v.initialWindow)
		for _, s := range c.streams {
			if s.sendWin += delta; s.sendWin > maxStreamID {
				c.mu.Unlock()
				return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE takes a stream window above 2^31-1"}
			}
		}
	}
	if v.has&(1<<http2.SettingMaxFrameSize) != 0 {
		c.peerMaxFrame = int(v.maxFrame)
	}
	if v.has&(1<<http2.SettingMaxConcurrentStreams) != 0 {
		c.peerStreams = v.maxStreams
	} else if !c.gotSettings {
		// No limit (RFC 9113 §6.5.2), as grpc-go servers say by saying
		// nothing: the guess made before SETTINGS no longer holds.
		c.peerStreams = math.MaxUint32
	}
	if v.has&(1<<http2.SettingHeaderTableSize) != 0 {
		c.enc.SetMaxDynamicTableSizeLimit(v.tableSize)
	}
	c.gotSettings = true
	if err := c.controlLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.wbuf = appendSettingsAck(c.wbuf)
	flushed = c.flushPendingLocked(flushed)
	c.mu.Unlock()
	c.kick()
	c.afterFlush(flushed)
	if c.client && c.up != nil {
		c.up.connReady(c)
	}
	return nil
}

// settingValues are the settings of one SETTINGS frame we act on; where a
// setting appears twice (an upstream's: a client's is refused) the last
// value holds.
type settingValues struct {
	has                                            uint16 // 1<<id for each setting present
	initialWindow, maxFrame, maxStreams, tableSize uint32
}

// parseSettings reads and checks a SETTINGS payload, changing nothing.
func parseSettings(p []byte) (v settingValues, err error) {
	for i := 0; i+6 <= len(p); i += 6 {
		id, val := http2.SettingID(binary.BigEndian.Uint16(p[i:])), binary.BigEndian.Uint32(p[i+2:])
		switch id {
		case http2.SettingInitialWindowSize:
			if val > maxStreamID {
				return v, connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"}
			}
			v.initialWindow = val
		case http2.SettingMaxFrameSize:
			if val < defaultMaxFrame || val > 1<<24-1 {
				return v, connError{http2.ErrCodeProtocol, "SETTINGS_MAX_FRAME_SIZE out of range"}
			}
			v.maxFrame = val
		case http2.SettingMaxConcurrentStreams:
			v.maxStreams = val
		case http2.SettingHeaderTableSize:
			v.tableSize = val
		case http2.SettingEnablePush:
			if val > 1 {
				return v, connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH not 0 or 1"}
			}
		default:
			continue
		}
		v.has |= 1 << id
	}
	return v, nil
}

func (c *conn) onPing(h frameHeader, p []byte) error {
	if h.length != 8 || h.stream != 0 {
		return connError{http2.ErrCodeProtocol, "bad PING"}
	}
	if h.flags&http2.FlagPingAck != 0 {
		c.mu.Lock()
		c.pingSent = time.Time{}
		c.mu.Unlock()
		return nil
	}
	now := time.Now()
	var data [8]byte
	copy(data[:], p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.waitRoomLocked(); err != nil {
		return err
	}
	if !c.pingBudget.take(now, c.dataSent, c.lim.MaxPingsPerSecond) {
		return newFlood(floodPing, http2.ErrCodeEnhanceYourCalm, "too many pings")
	}
	if err := c.controlLocked(); err != nil {
		return err
	}
	c.wbuf = appendPing(c.wbuf, true, data)
	c.kick()
	return nil
}

func (c *conn) onGoAway(h frameHeader, p []byte) error {
	if h.stream != 0 || h.length < 8 {
		return connError{http2.ErrCodeProtocol, "bad GOAWAY"}
	}
	last := binary.BigEndian.Uint32(p) & maxStreamID
	var refused []*stream
	c.mu.Lock()
	c.goingAway = true
	c.peerLastID = last
	if c.client {
		for id, s := range c.streams {
			if id > last {
				refused = append(refused, s)
			}
		}
	}
	idle := len(c.streams) == len(refused)
	c.mu.Unlock()
	for _, s := range refused {
		s.call.onUpstreamRefused(s, "the upstream is going away (GOAWAY) and did not process the request")
	}
	if c.client {
		c.up.connGone(c)
		if idle {
			c.closeGracefully()
		}
	}
	return nil
}

func (c *conn) onWindowUpdate(h frameHeader, p []byte) error {
	if h.length != 4 {
		return connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE of the wrong size"}
	}
	incr := int64(binary.BigEndian.Uint32(p) & maxStreamID)
	if incr == 0 {
		if h.stream == 0 {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0"}
		}
		c.mu.Lock()
		s := c.streams[h.stream]
		c.mu.Unlock()
		if s != nil {
			return c.streamError(s, http2.ErrCodeProtocol)
		}
		return nil
	}
	var flushed []*stream
	c.mu.Lock()
	if h.stream == 0 {
		c.sendWin += incr
		if c.sendWin > maxStreamID {
			c.mu.Unlock()
			return connError{http2.ErrCodeFlowControl, "connection window above 2^31-1"}
		}
	} else if s := c.streams[h.stream]; s != nil {
		s.sendWin += incr
		if s.sendWin > maxStreamID {
			c.mu.Unlock()
			return c.streamError(s, http2.ErrCodeFlowControl)
		}
	} else if c.idleLocked(h.stream) {
		c.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	flushed = c.flushPendingLocked(flushed)
	c.mu.Unlock()
	if len(flushed) > 0 {
		c.kick()
		c.afterFlush(flushed)
	}
	return nil
}

// flushPendingLocked sends what the windows now allow of the streams
// waiting for them, oldest first, and returns the streams that sent
// something (for credit and completion after c.mu is released).
func (c *conn) flushPendingLocked(flushed []*stream) []*stream {
	if len(c.pendList) == 0 || c.sendWin <= 0 {
		return flushed
	}
	keep := c.pendList[:0]
	for _, s := range c.pendList {
		if s.closed {
			s.inPendList = false
			continue
		}
		if c.sendWin > 0 && s.sendWin > 0 {
			if s.flushLocked() {
				flushed = append(flushed, s)
			}
		}
		if s.hasPending() {
			keep = append(keep, s)
		} else {
			s.inPendList = false
		}
	}
	clear(c.pendList[len(keep):])
	c.pendList = keep
	return flushed
}

// afterFlush credits the sources of data that just left and finishes
// calls whose last frame went out. c.mu must not be held.
func (c *conn) afterFlush(flushed []*stream) {
	for _, s := range flushed {
		s.call.afterFlush(s)
	}
}

// creditLocked returns n consumed bytes to the peer's windows: the
// stream's, if it is still receiving, and on a client's connection the
// connection's. (An upstream connection's window is returned as bytes
// arrive, in onData: it is shared by many clients' calls, and one client
// that does not read must not stall the others; what waits for a slow
// client stays bounded by its streams' windows.) Updates go out once a
// quarter of a window is owed, so a busy connection sends few.
func (c *conn) creditLocked(s *stream, n int64) {
	if n <= 0 || c.closed {
		return
	}
	if !c.client {
		c.creditConnLocked(n)
	}
	if s == nil || s.closed || s.recvEnd {
		return
	}
	s.recvUnacked += n
	if s.recvUnacked >= int64(c.set.streamWindow)/4 {
		c.wbuf = appendWindowUpdate(c.wbuf, s.id, uint32(s.recvUnacked))
		s.recvWin += s.recvUnacked
		s.recvUnacked = 0
	}
}

// creditConnLocked returns n bytes to the peer's connection window. It
// reports whether a WINDOW_UPDATE was queued (the writer needs a kick).
func (c *conn) creditConnLocked(n int64) bool {
	c.recvUnacked += n
	if c.recvUnacked < int64(c.set.connWindow)/4 {
		return false
	}
	c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.recvUnacked))
	c.recvWin += c.recvUnacked
	c.recvUnacked = 0
	return true
}

// credit is creditLocked for callers that do not hold c.mu.
func (c *conn) credit(s *stream, n int64) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	before := len(c.wbuf)
	c.creditLocked(s, n)
	wrote := len(c.wbuf) > before
	c.mu.Unlock()
	if wrote {
		c.kick()
	}
}

// encodeHeadersLocked HPACK-encodes fields and frames them on stream id
// of a client connection (response headers and trailers).
func (c *conn) encodeHeadersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	c.encBuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(f) // writes to a bytes.Buffer: no error
	}
	c.wbuf = appendHeaderBlock(c.wbuf, id, c.encBuf.Bytes(), end, c.peerMaxFrame)
	c.checkQueueLocked()
}

// removeLocked forgets a finished stream.
func (c *conn) removeLocked(s *stream) {
	if s.closed {
		return
	}
	s.closed = true
	c.pendBytes -= int64(len(s.pend))
	s.pend = nil
	delete(c.streams, s.id)
	if c.client {
		c.active.Add(-1)
	}
	if len(c.streams) == 0 {
		c.lastActive = time.Now()
	}
}

// remove forgets a stream; on an upstream connection the freed slot may
// let a waiting call start, and a connection that is going away closes
// with its last stream.
func (c *conn) remove(s *stream) {
	c.mu.Lock()
	c.removeLocked(s)
	c.mu.Unlock()
	if c.client {
		c.up.slotFreed()
	}
	c.maybeCloseIdle()
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

// stream is one side of a call on one connection.
type stream struct {
	id    uint32
	c     *conn
	call  *Call
	front bool // the client's stream (server side), not an upstream's

	// Guarded by c.mu.
	sendWin     int64
	pend        []byte // DATA waiting for window
	pendEnd     bool   // END_STREAM follows pend
	trailers    []hpack.HeaderField
	hasTrailers bool // trailers follow pend (front only)
	inPendList  bool
	sentEnd     bool // END_STREAM or RST_STREAM sent
	recvEnd     bool // END_STREAM or RST_STREAM received
	recvWin     int64
	recvUnacked int64
	closed      bool // removed from c.streams
	gotHeaders  bool // upstream side: response headers arrived (guarded by call.mu)

	wired atomic.Int64 // payload bytes written to c.wbuf
}

func (s *stream) hasPending() bool { return len(s.pend) > 0 || s.pendEnd || s.hasTrailers }

// sendDataLocked writes p now as far as the windows allow and queues the
// rest; end marks the last DATA. It reports whether anything was written.
func (s *stream) sendDataLocked(p []byte, end bool) bool {
	if s.sentEnd {
		return false
	}
	if s.hasPending() {
		s.pend = append(s.pend, p...)
		s.c.pendBytes += int64(len(p))
		s.pendEnd = s.pendEnd || end
		return false
	}
	c := s.c
	wrote := false
	for len(p) > 0 {
		n := int(min(int64(len(p)), s.sendWin, c.sendWin, int64(c.peerMaxFrame), c.roomLocked()))
		if n <= 0 {
			break
		}
		last := n == len(p)
		c.wbuf = appendData(c.wbuf, s.id, p[:n], end && last)
		c.dataSent++
		s.sendWin -= int64(n)
		c.sendWin -= int64(n)
		s.wired.Add(int64(n))
		p = p[n:]
		wrote = true
		if last && end {
			s.sentEnd = true
			return true
		}
	}
	if len(p) == 0 && end {
		c.wbuf = appendData(c.wbuf, s.id, nil, true)
		s.sentEnd = true
		return true
	}
	if len(p) > 0 {
		s.pend = append(s.pend[:0], p...)
		c.pendBytes += int64(len(p))
		s.pendEnd = end
		s.queueLocked()
	}
	return wrote
}

// queueLocked puts the stream on its connection's list of streams
// waiting for window.
func (s *stream) queueLocked() {
	if !s.inPendList {
		s.inPendList = true
		s.c.pendList = append(s.c.pendList, s)
	}
}

// flushLocked sends what the windows allow of the stream's queue, then
// END_STREAM or the trailers when the queue empties. A front stream whose
// trailers went out is forgotten here; its call finishes in afterFlush.
func (s *stream) flushLocked() bool {
	c := s.c
	wrote := false
	for len(s.pend) > 0 {
		n := int(min(int64(len(s.pend)), s.sendWin, c.sendWin, int64(c.peerMaxFrame), c.roomLocked()))
		if n <= 0 {
			return wrote
		}
		endNow := n == len(s.pend) && s.pendEnd
		c.wbuf = appendData(c.wbuf, s.id, s.pend[:n], endNow)
		c.dataSent++
		s.sendWin -= int64(n)
		c.sendWin -= int64(n)
		s.wired.Add(int64(n))
		s.pend = s.pend[n:]
		c.pendBytes -= int64(n)
		wrote = true
		if endNow {
			s.pendEnd, s.sentEnd = false, true
		}
	}
	s.pend = nil
	if s.pendEnd {
		c.wbuf = appendData(c.wbuf, s.id, nil, true)
		s.pendEnd, s.sentEnd, wrote = false, true, true
	}
	if s.hasTrailers {
		s.writeTrailersLocked(s.trailers)
		s.trailers, s.hasTrailers, wrote = nil, false, true
	}
	return wrote
}

// sendTrailersLocked ends a front stream with trailers, after any data
// still waiting for window. It reports whether they went out now.
func (s *stream) sendTrailersLocked(fields []hpack.HeaderField) bool {
	if s.sentEnd || s.closed {
		return true
	}
	if s.hasPending() {
		s.trailers = append([]hpack.HeaderField(nil), fields...)
		s.hasTrailers = true
		s.queueLocked()
		return false
	}
	s.writeTrailersLocked(fields)
	return true
}

// writeTrailersLocked writes the final HEADERS of a front stream and, if
// the client is still sending, RST_STREAM(NO_ERROR) to stop it (as
// grpc-go's server does); the stream is then forgotten.
func (s *stream) writeTrailersLocked(fields []hpack.HeaderField) {
	c := s.c
	c.encodeHeadersLocked(s.id, fields, true)
	if !s.recvEnd {
		c.wbuf = appendRSTStream(c.wbuf, s.id, http2.ErrCodeNo)
	}
	s.sentEnd = true
	c.removeLocked(s)
}

// resetLocked sends RST_STREAM and forgets the stream.
func (s *stream) resetLocked(code http2.ErrCode) {
	if s.closed {
		return
	}
	c := s.c
	if !(s.sentEnd && s.recvEnd) {
		c.wbuf = appendRSTStream(c.wbuf, s.id, code)
	}
	s.sentEnd, s.recvEnd = true, true
	s.pendEnd, s.trailers, s.hasTrailers = false, nil, false
	c.removeLocked(s)
}
