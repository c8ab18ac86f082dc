package store

import (
	"context"
	"errors"
)

// kv is what the records are kept in: a bbolt file (boltkv.go) or an etcd
// cluster (etcd.go). Records and their rules (store.go, console.go,
// uids.go) are written once, against this.
type kv interface {
	// view runs fn in a read-only transaction on one consistent state.
	view(ctx context.Context, fn func(kvTx) error) error
	// update runs fn in a read-write transaction and commits what it
	// wrote, all or nothing. began is called once the transaction may
	// proceed (the writer lock is held): from then on a wait is a stall
	// (WriteStalled). On a store shared by several opusds fn runs again
	// when another one committed first, so fn must keep its effects to
	// the transaction and to variables it sets anew each time.
	update(ctx context.Context, began func(), fn func(kvTx) error) error
	// register keeps value under key in bucket for as long as this
	// opusd lives: on a shared store bound to a lease this opusd renews
	// (the key goes EtcdOptions.HostTTL after it stops), in a file simply
	// written. It returns once the first write is done. On a shared
	// store a value already there is replaced only if mine says it is
	// this opusd's (else *TakenError).
	register(ctx context.Context, bucket, key, value []byte, mine func(old []byte) bool) error
	// shared reports whether other hosts' opusds share the records.
	shared() bool
	// describe names the store for logs: a path, or endpoints and prefix.
	describe() string
	close() error
}

// kvTx is one transaction of a kv. Keys are ordered bytewise within a
// bucket; values handed out are valid only during the transaction and
// must not be changed.
type kvTx interface {
	// get returns the value of key in bucket, or nil.
	get(bucket, key []byte) []byte
	put(bucket, key, value []byte) error
	// del removes key; an absent key is no error.
	del(bucket, key []byte) error
	// ascend calls fn with the entries of bucket from key from (nil: the
	// first) upwards until fn returns errStop (then nil is returned) or
	// another error (returned).
	ascend(bucket, from []byte, fn func(k, v []byte) error) error
	// descend calls fn with the entries of bucket below key below (nil:
	// from the last) downwards, as ascend.
	descend(bucket, below []byte, fn func(k, v []byte) error) error
	// nextSequence returns the bucket's next sequence number, from 1.
	nextSequence(bucket []byte) (uint64, error)
}

// errStop ends an ascend or descend early without an error.
var errStop = errors.New("stop")

// ascendPrefix calls fn with the entries of bucket whose keys start with
// prefix, in order.
func ascendPrefix(t kvTx, bucket, prefix []byte, fn func(k, v []byte) error) error {
	return t.ascend(bucket, prefix, func(k, v []byte) error {
		if !hasPrefix(k, prefix) {
			return errStop
		}
		return fn(k, v)
	})
}
