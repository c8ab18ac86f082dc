package limitio

import (
	"bytes"
	"errors"
	"testing"
)

func TestWriter(t *testing.T) {
	errBig := errors.New("too big")
	tests := []struct {
		name   string
		writes []string
		want   string
		over   bool
	}{
		{"under", []string{"ab", "c"}, "abc", false},
		{"at the bound", []string{"abcd"}, "abcd", false},
		{"past it", []string{"ab", "cde"}, "ab", true},
		{"one write past it", []string{"abcde"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &Writer{W: &b, Max: 4, Err: errBig}
			var err error
			for _, s := range tt.writes {
				if _, err = w.Write([]byte(s)); err != nil {
					break
				}
			}
			if b.String() != tt.want || w.Over != tt.over || w.N != int64(len(tt.want)) || (err != nil) != tt.over || (tt.over && !errors.Is(err, errBig)) {
				t.Errorf("wrote %q n %d over %v err %v; want %q over %v", b.String(), w.N, w.Over, err, tt.want, tt.over)
			}
		})
	}
}
