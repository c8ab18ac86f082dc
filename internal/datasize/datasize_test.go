package datasize

import "testing"

func TestText(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"}, {1023, "1023 bytes"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{1<<20 - 1, "1024.0 KiB"}, {1 << 20, "1.0 MiB"}, {5<<20 + 1<<19, "5.5 MiB"}, {1<<30 - 1, "1024.0 MiB"}, {3 << 30, "3.0 GiB"}, {1 << 40, "1024.0 GiB"},
	} {
		if got := Text(tc.n); got != tc.want {
			t.Errorf("Text(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
