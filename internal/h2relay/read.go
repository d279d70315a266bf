// Reading: one goroutine per connection parses each frame in place out of
// the read buffer and handles it. Header blocks are assembled and decoded
// here, then handed to the side's handler (onRequestHeaders,
// onResponseHeaders); connection-level control frames (SETTINGS, PING,
// GOAWAY) are answered here. DATA and WINDOW_UPDATE are flow control
// (flow.go), RST_STREAM is a stream's (stream.go).

package h2relay

import (
	"encoding/binary"
	"math"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

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

func (c *conn) emitField(f hpack.HeaderField) {
	c.fieldsSize += f.Size()
	if c.fieldsSize <= c.set.maxHeaderList {
		c.fields = append(c.fields, f)
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
