package store

import (
	"context"
	"crypto/tls"
	"errors"
	"time"
)

// EtcdOptions says where OpenEtcd finds the cluster and how it talks to it.
type EtcdOptions struct {
	// Endpoints are the cluster's client URLs (http://HOST:PORT, or
	// https:// with TLS).
	Endpoints []string
	// Prefix is put before every key this store writes, so several Opus
	// installations (or tests) can share one cluster; "" means "/opus/".
	Prefix string
	// TLS is the client's TLS configuration (its CA and, for client
	// authentication, its certificate); nil means plain connections.
	TLS *tls.Config
	// DialTimeout bounds connecting at open; 0 means 5 seconds.
	DialTimeout time.Duration
	// RequestTimeout bounds each commit; 0 means 5 seconds. A store that
	// cannot reach the cluster within it refuses the change with
	// ErrUnavailable.
	RequestTimeout time.Duration
	Options
}

// ErrUnavailable means the state store cannot be reached: changes are
// refused until it can (reads answer from what this opusd last saw).
var ErrUnavailable = errors.New("the state store is unreachable")

// OpenEtcd opens the state kept in an etcd cluster under opt.Prefix,
// creating its schema version on first use.
func OpenEtcd(ctx context.Context, opt EtcdOptions) (*Store, error) {
	return nil, errors.New("etcd state store: not implemented yet")
}
