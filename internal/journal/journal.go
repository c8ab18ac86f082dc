// Package journal is a log/slog handler that writes to the systemd journal
// in its native protocol: one datagram per record on journald's socket,
// with MESSAGE=, PRIORITY= from the slog level, SYSLOG_IDENTIFIER= and
// every attribute as a field of its own (KEY=value, group names joined
// with '_', upper-cased), so `journalctl -u opusd PROJECT=blog` filters on
// them. Both daemons use it when systemd connected their stderr to the
// journal (JOURNAL_STREAM names stderr's device and inode) and log text to
// stderr otherwise.
//
// Why native rather than "<N>"-prefixed lines on stderr (sd-daemon(3)):
// the stream form carries only a priority and one line, so attributes
// would be text inside MESSAGE and a multi-line value (an Apache
// configtest error) would be split into several entries. The native form
// keeps every attribute a field and carries newlines intact. Should a send
// fail (journald restarting, a record too large for a datagram), the
// record goes to the fallback handler — text on stderr, which systemd
// still routes to the journal — so nothing is lost.
package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
)

// DefaultSocket is journald's native protocol socket.
const DefaultSocket = "/run/systemd/journal/socket"

// Options configure a Handler.
type Options struct {
	// Identifier is SYSLOG_IDENTIFIER, the name journalctl shows (the
	// program name, e.g. "opusd").
	Identifier string
	// Level is the minimum level logged (slog.LevelInfo if nil).
	Level slog.Leveler
	// Socket is journald's socket (DefaultSocket if empty); tests point
	// it at a socket of their own.
	Socket string
	// Fallback receives a record whose send failed (a text handler on
	// stderr if nil).
	Fallback slog.Handler
}

// Handler is a slog.Handler sending each record to the journal.
type Handler struct {
	opts   Options
	out    *sender
	attrs  []byte // pre-encoded fields from WithAttrs
	text   string // the same attributes as " key=value" for MESSAGE
	prefix string // open groups as "req." (FieldName makes it REQ_)
}

// sender is the unbound datagram socket all handlers derived from one
// NewHandler share. It is not connected, so a journald restart (a new
// socket at the same path) does not break logging for good.
type sender struct {
	conn *net.UnixConn
	addr *net.UnixAddr
}

// NewHandler opens a datagram socket for sending to opts.Socket. It does
// not check that journald listens: a failing send falls back per record.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	if opts.Level == nil {
		opts.Level = slog.LevelInfo
	}
	if opts.Fallback == nil {
		opts.Fallback = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: opts.Level})
	}
	// An autobound (abstract, unnamed) local address: nothing to clean up.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal: datagram socket: %w", err)
	}
	return &Handler{opts: opts, out: &sender{conn: conn, addr: &net.UnixAddr{Name: opts.Socket, Net: "unixgram"}}}, nil
}

// ForDaemon returns the handler a daemon logs with: native journal
// records when systemd connected stderr to the journal, else text on
// stderr. identifier is SYSLOG_IDENTIFIER. The native handler honours
// opts.Level only (the daemons set nothing else); the text handler, also
// the native one's fallback, honours all of opts.
func ForDaemon(identifier string, stderr io.Writer, opts *slog.HandlerOptions) slog.Handler {
	text := slog.NewTextHandler(stderr, opts)
	if ok, err := sdjournal.StderrIsJournalStream(); err != nil || !ok {
		return text
	}
	var level slog.Leveler
	if opts != nil {
		level = opts.Level
	}
	h, err := NewHandler(Options{Identifier: identifier, Level: level, Fallback: text})
	if err != nil {
		return text
	}
	return h
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

// Priority maps a slog level to a syslog priority: debug 7, info 6,
// warning 4, error 3 (levels in between round down to the next lower
// severity).
func Priority(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return 7
	case l < slog.LevelWarn:
		return 6
	case l < slog.LevelError:
		return 4
	}
	return 3
}

// Handle implements slog.Handler: it sends one datagram, or hands the
// record to the fallback when sending fails.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var fields bytes.Buffer
	var text strings.Builder
	text.WriteString(r.Message)
	text.WriteString(h.text)
	r.Attrs(func(a slog.Attr) bool {
		h.appendAttr(&fields, &text, h.prefix, a)
		return true
	})
	var msg bytes.Buffer
	appendField(&msg, "MESSAGE", text.String())
	appendField(&msg, "PRIORITY", strconv.Itoa(Priority(r.Level)))
	if h.opts.Identifier != "" {
		appendField(&msg, "SYSLOG_IDENTIFIER", h.opts.Identifier)
	}
	appendField(&msg, "SLOG_LEVEL", r.Level.String())
	msg.Write(h.attrs)
	msg.Write(fields.Bytes())
	if _, _, err := h.out.conn.WriteMsgUnix(msg.Bytes(), nil, h.out.addr); err != nil {
		// The fallback carries this handler's attributes and groups.
		return h.opts.Fallback.Handle(ctx, r)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	var fields bytes.Buffer
	var text strings.Builder
	for _, a := range attrs {
		h.appendAttr(&fields, &text, h.prefix, a)
	}
	h2 := *h
	h2.attrs = append(append([]byte(nil), h.attrs...), fields.Bytes()...)
	h2.text = h.text + text.String()
	h2.opts.Fallback = h.opts.Fallback.WithAttrs(attrs)
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	h2.opts.Fallback = h.opts.Fallback.WithGroup(name)
	return &h2
}

// appendAttr adds a as a field (and as " key=value" to the message text),
// flattening groups.
func (h *Handler) appendAttr(fields *bytes.Buffer, text *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			h.appendAttr(fields, text, p, g)
		}
		return
	}
	key, val := prefix+a.Key, a.Value.String()
	text.WriteByte(' ')
	text.WriteString(textKey(key))
	text.WriteByte('=')
	text.WriteString(textValue(val))
	appendField(fields, FieldName(key), val)
}

// reserved are fields the handler sets itself; an attribute of the same
// name is sent as SLOG_<NAME> rather than overriding them.
var reserved = map[string]bool{"MESSAGE": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true, "SLOG_LEVEL": true,
	"MESSAGE_ID": true, "CODE_FILE": true, "CODE_LINE": true, "CODE_FUNC": true, "SYSLOG_FACILITY": true, "SYSLOG_PID": true}

// FieldName turns an attribute key into a valid journal field name:
// upper-case letters, digits and '_', not starting with '_' or a digit
// (journald drops such fields or keeps them for itself), at most 64
// bytes, and not one of the fields the handler sets.
func FieldName(key string) string {
	var b strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(unicode.ToUpper(r))
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" || name[0] == '_' || name[0] >= '0' && name[0] <= '9' || reserved[name] {
		name = "SLOG_" + name
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// appendField encodes one field: NAME=value\n, or for a value holding a
// newline the binary-safe form NAME\n, 64-bit little-endian length,
// value, \n.
func appendField(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	if !strings.ContainsRune(value, '\n') {
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
		return
	}
	b.WriteByte('\n')
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
	b.Write(n[:])
	b.WriteString(value)
	b.WriteByte('\n')
}

// textKey and textValue render an attribute inside MESSAGE the way slog's
// text handler would, so `journalctl` without -o verbose still shows it.
func textKey(k string) string {
	if k == "" || needsQuote(k) {
		return strconv.Quote(k)
	}
	return k
}

func textValue(v string) string {
	if v == "" || needsQuote(v) {
		return strconv.Quote(v)
	}
	return v
}

func needsQuote(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || r == ' ' || r == '=' || r == '"' || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// Close closes the handler's socket (and every handler derived from it).
func (h *Handler) Close() error { return h.out.conn.Close() }

var _ slog.Handler = (*Handler)(nil)
