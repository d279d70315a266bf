package h2mux

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Until a connection's first request arrives, nobody else serves it: the
// demultiplexer is its HTTP/2 server. It acknowledges SETTINGS, answers
// PING, keeps the connection window, and ends the connection with a
// GOAWAY on a connection error, as net/http's server would (RFC 9113;
// clients and h2spec wait for the SETTINGS ACK before their first request).
// When the first request's headers are complete, the server chosen takes
// the connection over with what it needs of what came before: the
// client's settings, its connection window, and the request (replay.go).
// Its SETTINGS are net/http's, so that a connection net/http takes over
// has seen all its SETTINGS before the first request (see Server.H2).

// settingNoRFC7540Priorities is SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218).
const settingNoRFC7540Priorities http2.SettingID = 0x9

// PreludeLimits bound what an HTTP/2 connection may do before its first
// request, while the demultiplexer is its server. Zero values take the
// defaults.
type PreludeLimits struct {
	// FirstRequestTimeout bounds how long a connection may go without a
	// complete first request (it then gets GOAWAY NO_ERROR). Default
	// DefaultFirstRequestTimeout (10 s).
	FirstRequestTimeout time.Duration
	// MaxFramesBeforeRequest bounds the frames (SETTINGS, PING,
	// WINDOW_UPDATE, PRIORITY, unknown types) a connection may send before
	// its first request; beyond it is a flood: GOAWAY ENHANCE_YOUR_CALM.
	// Default DefaultMaxFramesBeforeRequest (100).
	MaxFramesBeforeRequest int
}

// Validate rejects negative limits, naming the flag.
func (l PreludeLimits) Validate() error {
	switch {
	case l.FirstRequestTimeout < 0:
		return fmt.Errorf("--h2_first_request_timeout = %s: must be >= 0 (0: the default, %s)", l.FirstRequestTimeout, DefaultFirstRequestTimeout)
	case l.MaxFramesBeforeRequest < 0:
		return fmt.Errorf("--h2_max_frames_before_request = %d: must be >= 0 (0: the default, %d)", l.MaxFramesBeforeRequest, DefaultMaxFramesBeforeRequest)
	}
	return nil
}

const (
	// peekLimit bounds the bytes a client may send before its first
	// request is complete.
	peekLimit = 256 << 10
	// readAhead is the read buffer; what it holds past the first request
	// is replayed too.
	readAhead = 4 << 10
	// maxSettingsPerFrame: x/net's server refuses more (and duplicates).
	maxSettingsPerFrame = 100
	// maxHeaderList bounds the decoded first request's headers; beyond
	// it the request still goes to net/http, which refuses it (431).
	maxHeaderList = 1 << 20
	maxWindow     = 1<<31 - 1
	initialWindow = 65535
	// defaultMaxFrameSize is SETTINGS_MAX_FRAME_SIZE until one is sent.
	defaultMaxFrameSize = 16384
	// goAwayLinger is how long a connection ended with GOAWAY is read
	// (and what it sends discarded) before it closes, so that closing
	// with unread data does not reset it before the client reads the
	// GOAWAY, as x/net's server does.
	goAwayLinger = time.Second
)

// Defaults of Server's limits on a connection's first request.
const (
	DefaultFirstRequestTimeout    = 10 * time.Second
	DefaultMaxFramesBeforeRequest = 100
)

// errGoAway: the demultiplexer ended the connection with a GOAWAY.
type errGoAway struct {
	code   http2.ErrCode
	reason string
}

func (e errGoAway) Error() string {
	return fmt.Sprintf("GOAWAY %v before the first request: %s", e.code, e.reason)
}

// handoff is what the server that takes a connection over needs.
type handoff struct {
	isGRPC bool
	// settings hold the last value the client sent of each setting the
	// servers know (as applying its SETTINGS frames in order leaves them:
	// nothing was sent in between that they could affect).
	settings []http2.Setting
	window   uint32 // the client's connection window increments, summed
	request  []byte // the first request's frames
	ahead    []byte // read after them
	ackSeen  bool   // the client acknowledged the demultiplexer's SETTINGS
}

// writeRest writes what follows the SETTINGS: the connection window and
// the first request.
func (h *handoff) writeRest(w *http2.Framer, b *bytes.Buffer) {
	if h.window > 0 {
		_ = w.WriteWindowUpdate(0, h.window) // to a bytes.Buffer: no error
	}
	b.Write(h.request)
}

// settingsPayload is h.settings as a SETTINGS frame's payload.
func (h *handoff) settingsPayload() []byte {
	p := make([]byte, 0, 6*len(h.settings))
	for _, s := range h.settings {
		p = binary.BigEndian.AppendUint16(p, uint16(s.ID))
		p = binary.BigEndian.AppendUint32(p, s.Val)
	}
	return p
}

// prelude serves one connection until its first request.
type prelude struct {
	c      net.Conn
	br     *bufio.Reader
	left   *io.LimitedReader // counts down peekLimit
	fr     *http2.Framer     // reads through raw, writes to c
	raw    bytes.Buffer      // the bytes of the frame being read
	frames int
	limits preludeLimits

	gotSettings bool
	ackSeen     bool
	settings    [settingNoRFC7540Priorities + 1]setting // by id: the last value the client sent
	window      int64                                   // connection window the client granted us
}

type setting struct {
	set bool
	val uint32
}

type preludeLimits struct {
	timeout      time.Duration
	maxFrames    int
	settings     []byte // the SETTINGS frame to send: net/http's (see Server.H2)
	maxFrameSize uint32 // as settings say
}

// classify serves c until its first request's headers are complete and
// returns what the server that takes it over needs. On an error it has
// sent a GOAWAY when one was due; the caller closes c.
func classify(c net.Conn, l preludeLimits) (*handoff, error) {
	_ = c.SetDeadline(time.Now().Add(l.timeout)) // bounds reads and our answers' writes alike
	defer c.SetDeadline(time.Time{})
	p := &prelude{c: c, br: bufio.NewReaderSize(c, readAhead), limits: l, window: initialWindow}
	p.left = &io.LimitedReader{R: p.br, N: peekLimit}
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(p.left, pre); err != nil {
		return nil, err
	}
	if string(pre) != http2.ClientPreface {
		return nil, errors.New("h2mux: not an HTTP/2 client preface")
	}
	p.fr = http2.NewFramer(c, io.TeeReader(p.left, &p.raw))
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.fr.MaxHeaderListSize = maxHeaderList
	p.fr.SetMaxReadFrameSize(l.maxFrameSize)
	if _, err := c.Write(l.settings); err != nil {
		return nil, err
	}
	for {
		h, err := p.next()
		if errors.Is(err, os.ErrDeadlineExceeded) { // reading or answering
			return nil, p.goAway(http2.ErrCodeNo, fmt.Sprintf("no request within %v", l.timeout))
		}
		if h != nil || err != nil {
			return h, err
		}
	}
}

// next reads and answers one frame; it returns the handoff once the
// first request's headers are complete.
func (p *prelude) next() (*handoff, error) {
	p.raw.Reset()
	fh, err := p.fr.ReadFrameHeader()
	if err != nil {
		return nil, p.readFailed(err)
	}
	if p.frames++; p.frames > p.limits.maxFrames {
		return nil, p.goAway(http2.ErrCodeEnhanceYourCalm, fmt.Sprintf("more than %d frames before the first request", p.limits.maxFrames))
	}
	if !p.gotSettings && (fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck)) {
		return nil, p.goAway(http2.ErrCodeProtocol, "the client preface must be followed by SETTINGS") // RFC 9113 §3.4
	}
	switch fh.Type {
	case http2.FrameData, http2.FrameRSTStream, http2.FrameWindowUpdate:
		if fh.StreamID != 0 { // no stream is open before the first HEADERS (RFC 9113 §5.1)
			return nil, p.goAway(http2.ErrCodeProtocol, fmt.Sprintf("%v on idle stream %d", fh.Type, fh.StreamID))
		}
	case http2.FramePushPromise:
		return nil, p.goAway(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	}
	f, err := p.fr.ReadFrameForHeader(fh)
	if se := (http2.StreamError{}); fh.Type == http2.FrameHeaders && errors.As(err, &se) {
		// A malformed first request: net/http's server answers it
		// (RST_STREAM) as it would any other.
		return p.handoff(false), nil
	}
	if err != nil {
		return nil, p.readFailed(err)
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return p.handoff(isGRPC(f)), nil
	case *http2.SettingsFrame:
		return nil, p.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			return nil, p.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if p.window += int64(f.Increment); p.window > maxWindow {
			return nil, p.goAway(http2.ErrCodeFlowControl, "WINDOW_UPDATE takes the connection window above 2^31-1")
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID { // RFC 9113 §5.3.1: a stream error
			return nil, p.fr.WriteRSTStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		return nil, p.goAway(http2.ErrCodeNo, "the client went away")
	}
	return nil, nil // anything else (ACKs, unknown types) needs no answer
}

func isGRPC(f *http2.MetaHeadersFrame) bool {
	for _, hf := range f.RegularFields() {
		if hf.Name == "content-type" {
			ct := hf.Value
			return strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web")
		}
	}
	return false
}

// onSettings validates a SETTINGS frame as x/net's server does, keeps its
// values for the handoff and acknowledges it.
func (p *prelude) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if p.ackSeen { // we sent one SETTINGS; x/net's server also hangs up on this
			return p.goAway(http2.ErrCodeProtocol, "SETTINGS ACK for SETTINGS never sent")
		}
		p.ackSeen = true
		return nil
	}
	if f.NumSettings() > maxSettingsPerFrame || f.HasDuplicates() {
		return p.goAway(http2.ErrCodeProtocol, fmt.Sprintf("SETTINGS with duplicates or more than %d settings", maxSettingsPerFrame))
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		if s.ID == settingNoRFC7540Priorities && s.Val > 1 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if int(s.ID) < len(p.settings) { // the servers ignore the others
			p.settings[s.ID] = setting{set: true, val: s.Val}
		}
		return nil
	})
	if ce := http2.ConnectionError(0); errors.As(err, &ce) {
		return p.goAway(http2.ErrCode(ce), "invalid SETTINGS value")
	}
	p.gotSettings = true
	return p.fr.WriteSettingsAck()
}

// handoff returns what the chosen server needs.
func (p *prelude) handoff(grpc bool) *handoff {
	h := &handoff{isGRPC: grpc, request: bytes.Clone(p.raw.Bytes()), ackSeen: p.ackSeen,
		window: uint32(p.window - initialWindow)}
	for id, v := range p.settings {
		if v.set {
			h.settings = append(h.settings, http2.Setting{ID: http2.SettingID(id), Val: v.val})
		}
	}
	ahead, _ := p.br.Peek(p.br.Buffered())
	h.ahead = bytes.Clone(ahead)
	return h
}

// readFailed ends the connection after a read error, with a GOAWAY when
// the client broke a rule or a bound.
func (p *prelude) readFailed(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		reason := "invalid frame"
		if d := p.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return p.goAway(http2.ErrCode(ce), reason)
	case errors.Is(err, http2.ErrFrameTooLarge):
		return p.goAway(http2.ErrCodeFrameSize, fmt.Sprintf("frame larger than SETTINGS_MAX_FRAME_SIZE (%d)", p.limits.maxFrameSize))
	case p.left.N <= 0:
		return p.goAway(http2.ErrCodeEnhanceYourCalm, fmt.Sprintf("more than %d bytes before the first request", peekLimit))
	}
	return err
}

// goAway sends a GOAWAY (no stream was processed) and waits a moment for
// the client to read it.
func (p *prelude) goAway(code http2.ErrCode, reason string) error {
	_ = p.c.SetDeadline(time.Now().Add(goAwayLinger))
	if p.fr.WriteGoAway(0, code, []byte(reason)) == nil {
		_, _ = io.CopyN(io.Discard, p.br, peekLimit)
	}
	return errGoAway{code, reason}
}
