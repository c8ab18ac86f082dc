package acme

import (
	"math/rand/v2"
	"time"
)

// RenewAt is when a certificate valid from notBefore to notAfter is due
// for renewal: when a third of its lifetime is left (30 days of Let's
// Encrypt's 90, as its own clients do), which leaves weeks of tries
// before a failing renewal matters.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 3)
}

// Defaults of Backoff.
const (
	DefaultRetryMin = time.Minute
	DefaultRetryMax = 6 * time.Hour
	// jitter is the fraction a delay is spread by either way, so that
	// projects that failed together (the CA was down) do not all ask again
	// at the same moment.
	jitter = 0.2
)

// Backoff spaces the tries after failures: Min after the first, twice as
// long after each further one, at most Max, each spread by ±20% at random.
type Backoff struct {
	Min, Max time.Duration // 0: DefaultRetryMin, DefaultRetryMax
	// Rand returns a number in [0, 1) (math/rand/v2's Float64 if nil).
	Rand func() float64
}

// Delay is the wait after the n-th failure in a row (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultRetryMin
	}
	if hi <= 0 {
		hi = DefaultRetryMax
	}
	hi = max(hi, lo)
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(float64(d) * (1 - jitter + 2*jitter*r()))
}

// NextTry is when to ask the CA again after the n-th failure in a row at
// now, for a project whose installed certificate from the CA expires at
// notAfter (zero when it has none): after the backoff delay, but while a
// certificate still serves, never later than halfway to its expiry, so
// that a CA that is back is used before the certificate runs out.
func (b Backoff) NextTry(now time.Time, n int, notAfter time.Time) time.Time {
	next := now.Add(b.Delay(n))
	if !notAfter.IsZero() && notAfter.After(now) {
		if half := now.Add(notAfter.Sub(now) / 2); half.Before(next) {
			next = half
		}
	}
	return next
}
