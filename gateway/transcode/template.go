// Package transcode maps REST/JSON requests to gRPC methods by the
// google.api.HttpRule grammar, the way ESP does: path templates with
// variables, `*` and `**`, custom verbs, query parameters into nested and
// repeated fields, body and response_body selection.
//
// It is written here rather than taken from connectrpc.com/vanguard because
// vanguard (v0.4.0) differs from ESP where users notice: it matches routes
// on the decoded path (so %2F inside a variable neither routes nor stays
// encoded), answers 500 to unknown query parameters, has plain-text 404/405
// bodies, prints zero values by default, and cannot stream ordinary
// messages to REST clients (ESP answers a JSON array).
package transcode

import (
	"fmt"
	"strings"
)

// segKind is one template segment's kind; higher binds more specifically.
type segKind int

const (
	segMulti   segKind = iota + 1 // "**": zero or more segments
	segSingle                     // "*": exactly one segment
	segLiteral                    // a fixed segment
)

type segment struct {
	kind    segKind
	literal string
}

// variable binds template segments [start, end) to a field path.
type variable struct {
	fieldPath []string
	start     int
	end       int // exclusive; -1 for a trailing "**" that runs to the end
}

// Template is a parsed path template, e.g. "/v1/{name=sessions/*}:stop".
type Template struct {
	raw       string
	segments  []segment
	verb      string
	variables []variable
}

func (t *Template) String() string { return t.raw }

// ParseTemplate parses a path template by the HttpRule grammar:
//
//	Template = "/" Segments [ Verb ] ;
//	Segments = Segment { "/" Segment } ;
//	Segment  = "*" | "**" | LITERAL | Variable ;
//	Variable = "{" FieldPath [ "=" Segments ] "}" ;
//	FieldPath = IDENT { "." IDENT } ;
//	Verb     = ":" LITERAL ;
func ParseTemplate(s string) (*Template, error) {
	p := &parser{in: s}
	t, err := p.template()
	if err != nil {
		return nil, fmt.Errorf("path template %q: %w", s, err)
	}
	t.raw = s
	return t, nil
}

type parser struct {
	in    string
	pos   int
	t     Template
	inVar bool
}

func (p *parser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func (p *parser) template() (*Template, error) {
	if p.peek() != '/' {
		return nil, fmt.Errorf("must start with /")
	}
	p.pos++
	if p.in == "/" {
		return &p.t, nil
	}
	if err := p.segments(); err != nil {
		return nil, err
	}
	if p.peek() == ':' {
		p.pos++
		v := p.literal()
		if v == "" {
			return nil, fmt.Errorf("empty verb at offset %d", p.pos)
		}
		p.t.verb = v
	}
	if p.pos != len(p.in) {
		return nil, fmt.Errorf("unexpected %q at offset %d", p.in[p.pos], p.pos)
	}
	for i, s := range p.t.segments {
		if s.kind == segMulti && i != len(p.t.segments)-1 {
			return nil, fmt.Errorf("** must be the last segment")
		}
	}
	return &p.t, nil
}

func (p *parser) segments() error {
	for {
		if err := p.segment(); err != nil {
			return err
		}
		if p.peek() != '/' {
			return nil
		}
		p.pos++
	}
}

func (p *parser) segment() error {
	switch {
	case strings.HasPrefix(p.in[p.pos:], "**"):
		p.pos += 2
		p.t.segments = append(p.t.segments, segment{kind: segMulti})
	case p.peek() == '*':
		p.pos++
		p.t.segments = append(p.t.segments, segment{kind: segSingle})
	case p.peek() == '{':
		return p.variable()
	default:
		lit := p.literal()
		if lit == "" {
			return fmt.Errorf("empty segment at offset %d", p.pos)
		}
		p.t.segments = append(p.t.segments, segment{kind: segLiteral, literal: lit})
	}
	return nil
}

func (p *parser) variable() error {
	if p.inVar {
		return fmt.Errorf("nested variable at offset %d", p.pos)
	}
	p.inVar = true
	defer func() { p.inVar = false }()
	p.pos++ // {
	start := p.pos
	for p.pos < len(p.in) && (isIdent(p.in[p.pos]) || p.in[p.pos] == '.') {
		p.pos++
	}
	path := p.in[start:p.pos]
	if path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") || strings.Contains(path, "..") {
		return fmt.Errorf("bad field path %q at offset %d", path, start)
	}
	v := variable{fieldPath: strings.Split(path, "."), start: len(p.t.segments)}
	if p.peek() == '=' {
		p.pos++
		if err := p.segments(); err != nil {
			return err
		}
	} else {
		p.t.segments = append(p.t.segments, segment{kind: segSingle})
	}
	if p.peek() != '}' {
		return fmt.Errorf("missing } at offset %d", p.pos)
	}
	p.pos++
	v.end = len(p.t.segments)
	if p.t.segments[v.end-1].kind == segMulti {
		v.end = -1
	}
	for _, o := range p.t.variables {
		if strings.Join(o.fieldPath, ".") == path {
			return fmt.Errorf("variable %q bound twice", path)
		}
	}
	p.t.variables = append(p.t.variables, v)
	return nil
}

// literal reads a LITERAL: anything up to a delimiter of the grammar.
func (p *parser) literal() string {
	start := p.pos
	for p.pos < len(p.in) && !strings.ContainsRune("/{}=:*", rune(p.in[p.pos])) {
		p.pos++
	}
	return p.in[start:p.pos]
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// match matches escaped path segments (already split, verb removed)
// against the template. It returns each variable's raw (escaped) segments
// and a specificity score per segment, or ok=false.
func (t *Template) match(segs []string) (bindings [][]string, score []segKind, ok bool) {
	n := len(t.segments)
	multi := n > 0 && t.segments[n-1].kind == segMulti
	if multi {
		if len(segs) < n-1 {
			return nil, nil, false
		}
	} else if len(segs) != n {
		return nil, nil, false
	}
	score = make([]segKind, 0, len(segs))
	for i, s := range t.segments {
		if s.kind == segMulti {
			for range segs[i:] {
				score = append(score, segMulti)
			}
			break
		}
		if s.kind == segLiteral && segs[i] != s.literal {
			return nil, nil, false
		}
		if s.kind == segSingle && segs[i] == "" {
			return nil, nil, false
		}
		score = append(score, s.kind)
	}
	bindings = make([][]string, len(t.variables))
	for i, v := range t.variables {
		end := v.end
		if end < 0 {
			end = len(segs)
		}
		bindings[i] = segs[v.start:end]
	}
	return bindings, score, true
}
