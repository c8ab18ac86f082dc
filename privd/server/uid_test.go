package server

import (
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/testrun"
)

// freeID is an id of r no account of the host has (testrun.FreeID).
func freeID(t *testing.T, r config.UIDRange) uint32 {
	t.Helper()
	id, err := testrun.FreeID(r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
