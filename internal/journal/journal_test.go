package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseNative decodes one native-protocol datagram the way journald does:
// NAME=value lines, or NAME\n + 64-bit LE length + value + \n. A name may
// repeat; values are kept in order.
func parseNative(data []byte) (map[string][]string, error) {
	fields := map[string][]string{}
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("unterminated field %q", data)
		}
		line := data[:nl]
		if eq := bytes.IndexByte(line, '='); eq >= 0 {
			fields[string(line[:eq])] = append(fields[string(line[:eq])], string(line[eq+1:]))
			data = data[nl+1:]
			continue
		}
		name := string(line)
		data = data[nl+1:]
		if len(data) < 8 {
			return nil, fmt.Errorf("field %s: no length", name)
		}
		n := binary.LittleEndian.Uint64(data[:8])
		data = data[8:]
		if uint64(len(data)) < n+1 || data[n] != '\n' {
			return nil, fmt.Errorf("field %s: length %d does not fit", name, n)
		}
		fields[name] = append(fields[name], string(data[:n]))
		data = data[n+1:]
	}
	return fields, nil
}

// fakeJournal is a real unixgram socket standing in for journald's.
type fakeJournal struct {
	path string
	conn *net.UnixConn
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournal{path: path, conn: conn}
}

// next returns the next datagram's fields.
func (j *fakeJournal) next(t *testing.T) map[string][]string {
	t.Helper()
	buf := make([]byte, 1<<20)
	_ = j.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := j.conn.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no datagram on the journal socket: %v", err)
	}
	f, err := parseNative(buf[:n])
	if err != nil {
		t.Fatalf("datagram %q: %v", buf[:n], err)
	}
	return f
}

// none asserts nothing more arrives.
func (j *fakeJournal) none(t *testing.T) {
	t.Helper()
	_ = j.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 1<<16)
	if n, _, err := j.conn.ReadFromUnix(buf); err == nil {
		t.Errorf("unexpected datagram %q", buf[:n])
	}
}

func TestHandlerSendsNativeFields(t *testing.T) {
	j := newFakeJournal(t)
	var fallback bytes.Buffer
	h, err := NewHandler(Options{Identifier: "opusd", Level: slog.LevelDebug, Socket: j.path,
		Fallback: slog.NewTextHandler(&fallback, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	log := slog.New(h)
	multi := "AH00526: Syntax error on line 3\nInvalid command 'Bogus'"

	tests := []struct {
		name string
		log  func()
		want map[string]string
		// absent are fields that must not be sent.
		absent []string
	}{
		{"info with attributes",
			func() { log.Info("project deployed", "project", "blog", "took-ms", 1200) },
			map[string]string{"MESSAGE": "project deployed project=blog took-ms=1200", "PRIORITY": "6",
				"SYSLOG_IDENTIFIER": "opusd", "SLOG_LEVEL": "INFO", "PROJECT": "blog", "TOOK_MS": "1200"}, nil},
		{"debug", func() { log.Debug("tick") }, map[string]string{"MESSAGE": "tick", "PRIORITY": "7"}, []string{"PROJECT"}},
		{"warn", func() { log.Warn("slow") }, map[string]string{"PRIORITY": "4", "SLOG_LEVEL": "WARN"}, nil},
		{"error with a multi-line value, binary-safe",
			func() { log.Error("configtest failed", "err", errors.New(multi)) },
			map[string]string{"PRIORITY": "3", "ERR": multi,
				"MESSAGE": "configtest failed err=" + fmt.Sprintf("%q", multi)}, nil},
		{"groups and WithAttrs",
			func() {
				log.With("component", "reconciler").WithGroup("step").Info("ran", "name", "vhost", slog.Group("t", "ms", 5))
			},
			map[string]string{"COMPONENT": "reconciler", "STEP_NAME": "vhost", "STEP_T_MS": "5",
				"MESSAGE": "ran component=reconciler step.name=vhost step.t.ms=5"}, nil},
		{"an attribute cannot override the handler's fields",
			func() { log.Info("real", "message", "forged", "priority", "0", "_PID", "1") },
			map[string]string{"MESSAGE": "real message=forged priority=0 _PID=1", "PRIORITY": "6",
				"SLOG_MESSAGE": "forged", "SLOG_PRIORITY": "0", "SLOG__PID": "1"}, []string{"_PID"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.log()
			got := j.next(t)
			for k, v := range tc.want {
				if len(got[k]) != 1 || got[k][0] != v {
					t.Errorf("%s = %q, want exactly [%q]", k, got[k], v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := got[k]; ok {
					t.Errorf("field %s sent: %q", k, got[k])
				}
			}
		})
	}
	if fallback.Len() != 0 {
		t.Errorf("fallback used while the journal socket works: %q", fallback.String())
	}
	// Below the level: nothing is sent.
	h2, err := NewHandler(Options{Socket: j.path, Level: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	slog.New(h2).Info("quiet")
	j.none(t)
}

// TestHandlerFallsBack: with no journald listening, the record goes to
// the fallback handler with its attributes and groups.
func TestHandlerFallsBack(t *testing.T) {
	var fallback bytes.Buffer
	h, err := NewHandler(Options{Socket: filepath.Join(t.TempDir(), "no-journal"),
		Fallback: slog.NewTextHandler(&fallback, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	slog.New(h).With("a", 1).WithGroup("g").Error("lost?", "b", 2)
	if want := "level=ERROR msg=lost? a=1 g.b=2\n"; fallback.String() != want {
		t.Errorf("fallback got %q, want %q", fallback.String(), want)
	}
}

// TestForDaemon: the native handler is chosen exactly when JOURNAL_STREAM
// names stderr's device and inode.
func TestForDaemon(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env    string
		native bool
	}{
		{"", false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"garbage", false},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			if tc.env == "" {
				t.Setenv("JOURNAL_STREAM", "")
				os.Unsetenv("JOURNAL_STREAM")
			} else {
				t.Setenv("JOURNAL_STREAM", tc.env)
			}
			h := ForDaemon("opusd", os.Stderr, nil)
			if _, native := h.(*Handler); native != tc.native {
				t.Errorf("JOURNAL_STREAM=%q: handler %T, native %v want %v", tc.env, h, native, tc.native)
			}
			if n, ok := h.(*Handler); ok {
				n.Close()
			}
		})
	}
}

func TestPriority(t *testing.T) {
	for _, tc := range []struct {
		l    slog.Level
		want int
	}{{slog.LevelDebug, 7}, {slog.LevelInfo - 1, 7}, {slog.LevelInfo, 6}, {slog.LevelInfo + 2, 6},
		{slog.LevelWarn, 4}, {slog.LevelError, 3}, {slog.LevelError + 4, 3}} {
		if got := Priority(tc.l); got != tc.want {
			t.Errorf("Priority(%v) = %d, want %d", tc.l, got, tc.want)
		}
	}
}

func TestFieldName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"project", "PROJECT"}, {"took-ms", "TOOK_MS"}, {"step.name", "STEP_NAME"}, {"Err", "ERR"},
		{"_PID", "SLOG__PID"}, {"2fa", "SLOG_2FA"}, {"", "SLOG_"}, {"message", "SLOG_MESSAGE"},
		{"ünïcode", "SLOG__N_CODE"}, {strings.Repeat("a", 80), strings.Repeat("A", 64)},
	} {
		if got := FieldName(tc.in); got != tc.want {
			t.Errorf("FieldName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzField: every name FieldName makes is one journald accepts, and every
// value survives encoding, newlines and all.
func FuzzField(f *testing.F) {
	f.Add("project", "blog")
	f.Add("err", "line 1\nline 2\n")
	f.Add("_x", "")
	f.Add("9", "=\x00\n")
	f.Fuzz(func(t *testing.T, key, value string) {
		name := FieldName(key)
		if name == "" || len(name) > 64 || name[0] == '_' || name[0] >= '0' && name[0] <= '9' {
			t.Fatalf("FieldName(%q) = %q is not a valid journal field name", key, name)
		}
		for _, r := range name {
			if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
				t.Fatalf("FieldName(%q) = %q holds %q", key, name, r)
			}
		}
		var b bytes.Buffer
		appendField(&b, name, value)
		got, err := parseNative(b.Bytes())
		if err != nil || len(got[name]) != 1 || got[name][0] != value {
			t.Fatalf("field %s=%q encoded %q decodes to %q (%v)", name, value, b.Bytes(), got, err)
		}
	})
}

// The handler is safe for concurrent use (run with -race).
func TestHandlerConcurrent(t *testing.T) {
	j := newFakeJournal(t)
	h, err := NewHandler(Options{Socket: j.path})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			slog.New(h).With("i", i).Info("x")
		}()
	}
	for i := 0; i < 4; i++ {
		<-done
	}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		seen[j.next(t)["I"][0]] = true
	}
	if len(seen) != 4 {
		t.Errorf("got records for %v, want 4 distinct", seen)
	}
}

// TestHandlerTooLargeFallsBack: a record too large for one datagram
// (journald's real client passes those in a memfd; this handler does not)
// goes to the fallback whole, rather than being lost or cut.
func TestHandlerTooLargeFallsBack(t *testing.T) {
	j := newFakeJournal(t)
	var fallback bytes.Buffer
	h, err := NewHandler(Options{Socket: j.path, Fallback: slog.NewTextHandler(&fallback, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	big := strings.Repeat("x", 8<<20)
	slog.New(h).Info("huge", "blob", big)
	if !strings.Contains(fallback.String(), "msg=huge blob="+big) {
		t.Errorf("fallback got %d bytes, want the whole record", fallback.Len())
	}
	j.none(t)
}
