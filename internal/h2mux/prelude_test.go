package h2mux

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Before its first request a connection is the demultiplexer's to serve:
// these tests send no request, or send it last.

func TestSettingsAcknowledgedBeforeFirstRequest(t *testing.T) {
	m := startMux(t)
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *rawConn
	}{
		{"h2c", func(t *testing.T) *rawConn { return dialRaw(t, m.h2c, nil) }},
		{"TLS", func(t *testing.T) *rawConn { return dialRaw(t, m.tls, m.roots) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.dial(t).start(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			fs := r.readUntil("SETTINGS ACK", isSettingsAck)
			s, ok := fs[0].(*settingsCopy)
			if !ok || s.Flags.Has(http2.FlagSettingsAck) {
				t.Fatalf("first frame %v, want the server's SETTINGS", fs[0].Header())
			}
			// They are net/http's, whose limit h2spec tests.
			if !hasSetting(s.settings, http2.SettingMaxConcurrentStreams, 1000) || !hasSetting(s.settings, settingNoRFC7540Priorities, 1) {
				t.Errorf("server SETTINGS %v, want net/http's (MAX_CONCURRENT_STREAMS 1000, NO_RFC7540_PRIORITIES 1)", s.settings)
			}
			// Each SETTINGS is acknowledged, at once.
			r.check(r.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}))
			r.readUntil("a second SETTINGS ACK", isSettingsAck)
		})
	}
}

func hasSetting(s []http2.Setting, id http2.SettingID, v uint32) bool {
	for _, x := range s {
		if x.ID == id && x.Val == v {
			return true
		}
	}
	return false
}

func TestPingAnsweredBeforeFirstRequest(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	r.check(r.fr.WritePing(true, [8]byte{9})) // an ACK: answered by nothing
	r.check(r.fr.WritePing(false, [8]byte{1, 2, 3}))
	fs := r.readUntil("PING ACK", func(f http2.Frame) bool { return f.Header().Type == http2.FramePing })
	p := fs[len(fs)-1].(*http2.PingFrame)
	if !p.IsAck() || p.Data != [8]byte{1, 2, 3} {
		t.Fatalf("PING %v %v, want an ACK of [1 2 3 0 0 0 0 0]", p.Header(), p.Data)
	}
	// The server that takes the connection over does not answer it again.
	r.request(1, "/size/3", false)
	_, rest := r.response(1)
	if n := count(rest, func(f http2.Frame) bool { return f.Header().Type == http2.FramePing }); n != 0 {
		t.Errorf("%d more PING frames after the handoff: %s", n, summary(rest))
	}
}

// settingsFrame is a SETTINGS frame with the given raw entries.
func settingsFrame(entries ...[2]uint32) []byte {
	p := make([]byte, 0, 6*len(entries))
	for _, e := range entries {
		p = binary.BigEndian.AppendUint16(p, uint16(e[0]))
		p = binary.BigEndian.AppendUint32(p, e[1])
	}
	return p
}

func TestConnectionErrorsBeforeFirstRequestAreGoAway(t *testing.T) {
	m := startMux(t)
	many := make([][2]uint32, 101)
	for i := range many {
		many[i] = [2]uint32{uint32(0x100 + i), 1}
	}
	for _, tc := range []struct {
		name string
		send func(r *rawConn) error
		want http2.ErrCode
	}{
		{"SETTINGS_ENABLE_PUSH 2", settings([2]uint32{uint32(http2.SettingEnablePush), 2}), http2.ErrCodeProtocol},
		{"SETTINGS_INITIAL_WINDOW_SIZE 2^31", settings([2]uint32{uint32(http2.SettingInitialWindowSize), 1 << 31}), http2.ErrCodeFlowControl},
		{"SETTINGS_MAX_FRAME_SIZE 16383", settings([2]uint32{uint32(http2.SettingMaxFrameSize), 16383}), http2.ErrCodeProtocol},
		{"SETTINGS_MAX_FRAME_SIZE 2^24", settings([2]uint32{uint32(http2.SettingMaxFrameSize), 1 << 24}), http2.ErrCodeProtocol},
		{"SETTINGS_NO_RFC7540_PRIORITIES 2", settings([2]uint32{uint32(settingNoRFC7540Priorities), 2}), http2.ErrCodeProtocol},
		{"duplicate settings", settings([2]uint32{4, 100}, [2]uint32{4, 200}), http2.ErrCodeProtocol},
		{"101 settings", settings(many...), http2.ErrCodeProtocol},
		{"SETTINGS of 5 bytes", raw(http2.FrameSettings, 0, 0, make([]byte, 5)), http2.ErrCodeFrameSize},
		{"SETTINGS ACK with a payload", raw(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6)), http2.ErrCodeFrameSize},
		{"SETTINGS on stream 1", raw(http2.FrameSettings, 0, 1, nil), http2.ErrCodeProtocol},
		{"two SETTINGS ACKs for one SETTINGS", func(r *rawConn) error {
			r.check(r.fr.WriteSettingsAck())
			return r.fr.WriteSettingsAck()
		}, http2.ErrCodeProtocol},
		{"PING on stream 1", raw(http2.FramePing, 0, 1, make([]byte, 8)), http2.ErrCodeProtocol},
		{"PING of 7 bytes", raw(http2.FramePing, 0, 0, make([]byte, 7)), http2.ErrCodeFrameSize},
		{"WINDOW_UPDATE above 2^31-1", func(r *rawConn) error {
			r.check(r.fr.WriteWindowUpdate(0, 1<<31-1-65535))
			return r.fr.WriteWindowUpdate(0, 1)
		}, http2.ErrCodeFlowControl},
		{"WINDOW_UPDATE of 0", raw(http2.FrameWindowUpdate, 0, 0, make([]byte, 4)), http2.ErrCodeProtocol},
		{"WINDOW_UPDATE of 3 bytes", raw(http2.FrameWindowUpdate, 0, 0, make([]byte, 3)), http2.ErrCodeFrameSize},
		{"DATA on idle stream 1", raw(http2.FrameData, 0, 1, []byte("x")), http2.ErrCodeProtocol},
		{"DATA on stream 0", raw(http2.FrameData, 0, 0, []byte("x")), http2.ErrCodeProtocol},
		{"RST_STREAM on idle stream 1", raw(http2.FrameRSTStream, 0, 1, make([]byte, 4)), http2.ErrCodeProtocol},
		{"RST_STREAM on stream 0", raw(http2.FrameRSTStream, 0, 0, make([]byte, 4)), http2.ErrCodeProtocol},
		{"WINDOW_UPDATE on idle stream 1", raw(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 1}), http2.ErrCodeProtocol},
		{"CONTINUATION on idle stream 1", raw(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, []byte{0x82}), http2.ErrCodeProtocol},
		{"PRIORITY on stream 0", raw(http2.FramePriority, 0, 0, []byte{0, 0, 0, 1, 0}), http2.ErrCodeProtocol},
		{"PUSH_PROMISE", raw(http2.FramePushPromise, http2.FlagPushPromiseEndHeaders, 1, []byte{0, 0, 0, 2, 0x82}), http2.ErrCodeProtocol},
		{"GOAWAY", raw(http2.FrameGoAway, 0, 0, make([]byte, 8)), http2.ErrCodeNo},
		{"a frame over 16384 bytes", raw(0xfa, 0, 0, make([]byte, 16385)), http2.ErrCodeFrameSize},
		{"HEADERS on stream 0", raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 0, []byte{0x82}), http2.ErrCodeProtocol},
		{"HEADERS then PRIORITY", func(r *rawConn) error {
			r.check(r.fr.WriteRawFrame(http2.FrameHeaders, 0, 1, []byte{0x82}))
			return r.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 1})
		}, http2.ErrCodeProtocol},
		{"undecodable header block", raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, []byte{0xff, 0xff, 0xff, 0xff}), http2.ErrCodeCompression},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, m.h2c, nil).start()
			r.check(tc.send(r))
			r.expectGoAway(tc.want)
		})
	}
	t.Run("first frame not SETTINGS", func(t *testing.T) {
		r := dialRaw(t, m.h2c, nil)
		_, err := r.c.Write([]byte(http2.ClientPreface))
		r.check(err)
		r.check(r.fr.WritePing(false, [8]byte{}))
		r.expectGoAway(http2.ErrCodeProtocol)
	})
}

func settings(entries ...[2]uint32) func(*rawConn) error {
	return raw(http2.FrameSettings, 0, 0, settingsFrame(entries...))
}

func raw(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) func(*rawConn) error {
	return func(r *rawConn) error { return r.fr.WriteRawFrame(typ, flags, stream, payload) }
}

func TestPriorityOnItselfBeforeFirstRequestResetsTheStream(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	r.check(r.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3, Weight: 15}))
	fs := r.readUntil("RST_STREAM", func(f http2.Frame) bool { return f.Header().Type == http2.FrameRSTStream })
	if rst := fs[len(fs)-1].(*http2.RSTStreamFrame); rst.StreamID != 3 || rst.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("RST_STREAM %d %v, want stream 3 PROTOCOL_ERROR (RFC 9113 §5.3.1)", rst.StreamID, rst.ErrCode)
	}
	// A stream error: the connection lives on.
	r.check(r.fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 15}))
	r.request(7, "/size/2", false)
	if body, _ := r.response(7); string(body) != "xx" {
		t.Fatalf("body %q, want xx", body)
	}
}

func TestUnknownFramesBeforeFirstRequestAreIgnored(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	r.check(r.fr.WriteRawFrame(0xfa, 0xff, 0, []byte("extension")))
	r.check(r.fr.WriteRawFrame(0xfb, 0, 9, nil))
	r.check(r.fr.WritePing(false, [8]byte{7}))
	fs := r.readUntil("PING ACK", func(f http2.Frame) bool { return f.Header().Type == http2.FramePing })
	if n := count(fs, func(f http2.Frame) bool { return f.Header().Type == http2.FrameGoAway }); n != 0 {
		t.Fatalf("GOAWAY for an unknown frame type: %s", summary(fs))
	}
	r.request(1, "/size/1", false)
	if body, _ := r.response(1); string(body) != "x" {
		t.Fatalf("body %q, want x", body)
	}
}

// TestMalformedFirstRequestIsNetHTTPs: a first request that the servers
// would refuse as malformed is net/http's to refuse (a stream error), not
// the end of the connection.
func TestMalformedFirstRequestIsNetHTTPs(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	r.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/size/1"}, {":authority", "x"}, {"X-Upper", "1"}} {
		r.check(r.enc.WriteField(hpackField(f[0], f[1])))
	}
	r.check(r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.buf.Bytes(), EndHeaders: true, EndStream: true}))
	fs := r.readUntil("RST_STREAM", func(f http2.Frame) bool {
		return f.Header().Type == http2.FrameRSTStream || f.Header().Type == http2.FrameGoAway
	})
	if rst, ok := fs[len(fs)-1].(*http2.RSTStreamFrame); !ok || rst.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("got %s, want RST_STREAM PROTOCOL_ERROR on stream 1", summary(fs))
	}
	r.request(3, "/size/1", false)
	if body, _ := r.response(3); string(body) != "x" {
		t.Fatalf("body %q, want x", body)
	}
}

// TestPingFloodBeforeFirstRequest: a peer that sends frames but no
// request gets GOAWAY ENHANCE_YOUR_CALM after MaxFramesBeforeRequest, and
// no more answers than that.
func TestPingFloodBeforeFirstRequest(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	var flood bytes.Buffer
	w := http2.NewFramer(&flood, nil)
	for i := range 10 * DefaultMaxFramesBeforeRequest {
		_ = w.WritePing(false, [8]byte{byte(i)})
	}
	go func() { _, _ = r.c.Write(flood.Bytes()) }() // the server stops reading: this may not finish
	fs := r.readUntil("GOAWAY", func(f http2.Frame) bool { return f.Header().Type == http2.FrameGoAway })
	if g := fs[len(fs)-1].(*goAwayCopy); g.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v (%q), want ENHANCE_YOUR_CALM", g.code, g.debug)
	}
	acks := count(fs, func(f http2.Frame) bool { return f.Header().Type == http2.FramePing })
	if acks >= DefaultMaxFramesBeforeRequest {
		t.Errorf("%d PINGs answered, want fewer than %d (MaxFramesBeforeRequest counts the SETTINGS too)", acks, DefaultMaxFramesBeforeRequest)
	}
	r.expectClosed()
}

// TestBytesBeforeFirstRequestAreBounded: frames the bound on frames does
// not catch (few, but large) are bounded in bytes.
func TestBytesBeforeFirstRequestAreBounded(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start()
	go func() {
		for range peekLimit/16384 + 1 {
			if r.fr.WriteRawFrame(0xfa, 0, 0, make([]byte, 16384)) != nil {
				return
			}
		}
	}()
	r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
}

// TestNoRequestInTimeIsGoAway: a connection that sends no request (even
// while it keeps sending PINGs) is closed with GOAWAY NO_ERROR after
// FirstRequestTimeout.
func TestNoRequestInTimeIsGoAway(t *testing.T) {
	m := startMux(t, func(s *Server) { s.FirstRequestTimeout = 300 * time.Millisecond })
	t.Run("silent", func(t *testing.T) {
		r := dialRaw(t, m.h2c, nil).start()
		r.expectGoAway(http2.ErrCodeNo)
	})
	t.Run("pinging", func(t *testing.T) {
		r := dialRaw(t, m.h2c, nil).start()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if r.fr.WritePing(false, [8]byte{}) != nil {
						return
					}
				}
			}
		}()
		r.expectGoAway(http2.ErrCodeNo)
	})
}

// expectClosed reads until the server closes the connection.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	for {
		if _, err := r.fr.ReadFrame(); err != nil {
			if isEOF(err) {
				return
			}
			r.t.Fatalf("want the connection closed: %v", err)
		}
	}
}
