package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// boltKV keeps the records in one bbolt file: the single-host default.
// Buckets are made on their first write; a read of a bucket never written
// finds nothing.
type boltKV struct{ db *bolt.DB }

func openBolt(path string, opt Options) (*boltKV, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: locked by another process (is another opusd running?): %w", path, err)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return &boltKV{db: db}, nil
}

func (b *boltKV) view(_ context.Context, fn func(kvTx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// update holds bbolt's writer lock while fn runs: fn runs once.
func (b *boltKV) update(_ context.Context, began func(), fn func(kvTx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		began()
		return fn(boltTx{tx})
	})
}

// register writes value once: a file has one host, this one.
func (b *boltKV) register(ctx context.Context, bucket, key, value []byte, _ func([]byte) bool) error {
	return b.update(ctx, func() {}, func(t kvTx) error { return t.put(bucket, key, value) })
}

func (b *boltKV) shared() bool     { return false }
func (b *boltKV) describe() string { return b.db.Path() }
func (b *boltKV) close() error     { return b.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) get(bucket, key []byte) []byte {
	if b := t.tx.Bucket(bucket); b != nil {
		return b.Get(key)
	}
	return nil
}

func (t boltTx) put(bucket, key, value []byte) error {
	b, err := t.tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	return b.Put(key, value)
}

func (t boltTx) del(bucket, key []byte) error {
	if b := t.tx.Bucket(bucket); b != nil {
		return b.Delete(key)
	}
	return nil
}

func (t boltTx) ascend(bucket, from []byte, fn func(k, v []byte) error) error {
	b := t.tx.Bucket(bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	k, v := c.First()
	if from != nil {
		k, v = c.Seek(from)
	}
	for ; k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return stopped(err)
		}
	}
	return nil
}

func (t boltTx) descend(bucket, below []byte, fn func(k, v []byte) error) error {
	b := t.tx.Bucket(bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	if below == nil {
		k, v = c.Last()
	} else if k, v = c.Seek(below); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil; k, v = c.Prev() {
		if err := fn(k, v); err != nil {
			return stopped(err)
		}
	}
	return nil
}

func (t boltTx) nextSequence(bucket []byte) (uint64, error) {
	b, err := t.tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return 0, err
	}
	return b.NextSequence()
}

// stopped turns errStop into nil.
func stopped(err error) error {
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// sequenceText is how a sequence number is kept where the store keeps it
// as a value (etcd).
func sequenceText(n uint64) []byte { return strconv.AppendUint(nil, n, 10) }
