// Package limitio bounds a stream that is written, the counterpart of
// io.LimitReader: a copy out of a tenant's tree (privd's data copies) or
// into opusd's own files (snapshots, backups) must stop at its bound and
// say so, rather than be cut short in silence.
package limitio

import "io"

// Writer passes at most Max bytes to W; a write past that writes nothing,
// sets Over and fails with Err, which ends the copy (a program writing
// to it gets EPIPE).
type Writer struct {
	W   io.Writer
	Max int64
	// Err is the error of a write past Max.
	Err error
	// N is the bytes written; Over says a write went past Max.
	N    int64
	Over bool
}

func (l *Writer) Write(p []byte) (int, error) {
	if l.N+int64(len(p)) > l.Max {
		l.Over = true
		return 0, l.Err
	}
	n, err := l.W.Write(p)
	l.N += int64(n)
	return n, err
}
