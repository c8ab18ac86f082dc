package server

import (
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/testrun"
)

// testUID is a free id at the top of the default project_uids range (away
// from the ids a real opusd hands out first), for tests whose Accounts use
// the default range.
func testUID(t *testing.T) uint32 {
	t.Helper()
	r := config.Default().ProjectUIDs
	id, err := testrun.FreeID(config.UIDRange{First: r.Last - 999, Last: r.Last})
	if err != nil {
		t.Fatal(err)
	}
	return id
}
