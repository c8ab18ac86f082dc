package credential

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=1$") {
		t.Fatalf("hash %q is not argon2id PHC", h)
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		hash, pw string
		ok       bool
		err      error
	}{
		{h, "correct horse", true, nil},
		{h, "correct horse ", false, nil},
		{h, "", false, nil},
		{"", "x", false, nil}, // no password: costs a check, never matches
		{"", "", false, nil},
		{noPasswordHash, "", false, nil},
		{"$argon2i$v=19$m=1,t=1,p=1$AAAA$AAAA", "x", false, ErrBadHash},
		{"$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA", "x", false, ErrBadHash},
		{"$argon2id$v=19$m=8,t=1,p=1$!!$AAAA", "x", false, ErrBadHash},
	} {
		ok, err := CheckPassword(tc.hash, tc.pw)
		if ok != tc.ok || !errors.Is(err, tc.err) {
			t.Errorf("CheckPassword(%.30q, %q) = %v, %v; want %v, %v", tc.hash, tc.pw, ok, err, tc.ok, tc.err)
		}
	}
}

func FuzzCheckPassword(f *testing.F) {
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA", "pw")
	f.Add("$argon2id$v=19$m=0,t=0,p=0$$", "")
	f.Add("garbage", "x")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		// Never panics, and a parse error is never a match.
		if ok, err := CheckPassword(hash, pw); ok && err != nil {
			t.Fatalf("match with error %v", err)
		}
	})
}

func TestSlots(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		s := make(slots, n)
		var releases []func()
		for i := range n {
			release, ok := s.try()
			if !ok {
				t.Fatalf("slots(%d): slot %d refused", n, i)
			}
			releases = append(releases, release)
		}
		if _, ok := s.try(); ok {
			t.Fatalf("slots(%d): slot %d given", n, n)
		}
		releases[0]()
		release, ok := s.try()
		if !ok {
			t.Fatalf("slots(%d): a released slot is not given again", n)
		}
		release()
	}
}

// TestPasswordHashersBounded: with every hasher taken, hashing and
// checking fail at once with ErrBusy (no 64 MiB allocated, no wait); a
// freed slot works again.
func TestPasswordHashersBounded(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	var held []func()
	for range PasswordHashers {
		release, ok := hashSlots.try()
		if !ok {
			t.Fatal("a hasher is busy before the test")
		}
		held = append(held, release)
	}
	start := time.Now()
	if _, err := HashPassword("x"); !errors.Is(err, ErrBusy) {
		t.Errorf("HashPassword with every hasher busy: %v, want ErrBusy", err)
	}
	for _, hash := range []string{h, ""} {
		if ok, err := CheckPassword(hash, "correct horse"); ok || !errors.Is(err, ErrBusy) {
			t.Errorf("CheckPassword(%.20q) with every hasher busy: %v %v, want ErrBusy", hash, ok, err)
		}
	}
	// A hash that does not parse is refused before it needs a hasher.
	if _, err := CheckPassword("garbage", "x"); !errors.Is(err, ErrBadHash) {
		t.Errorf("bad hash with every hasher busy: %v", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("busy answers took %v; they must not wait or hash", d)
	}
	held[0]()
	if ok, err := CheckPassword(h, "correct horse"); !ok || err != nil {
		t.Errorf("CheckPassword with a hasher free: %v %v", ok, err)
	}
	for _, release := range held[1:] {
		release()
	}
}

// TestTokens: tokens are 256 random bits, URL-safe, never equal; a
// token's key is its SHA-256 and never the token itself.
func TestTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 43 || strings.ContainsAny(tok, "+/=") || len(tok) > MaxTokenLen {
			t.Fatalf("token %q: want 43 base64url characters", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q made twice", tok)
		}
		seen[tok] = true
		if k := TokenKey(tok); k == tok || len(k) != 64 || strings.Contains(k, tok) || TokenKey(tok) != k {
			t.Fatalf("key of %q is %q: want its stable SHA-256 in hex", tok, k)
		}
	}
	for _, tc := range []struct{ token, key string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	} {
		if got := TokenKey(tc.token); got != tc.key {
			t.Errorf("TokenKey(%q) = %s, want %s", tc.token, got, tc.key)
		}
	}
}
