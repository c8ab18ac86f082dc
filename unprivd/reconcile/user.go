package reconcile

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/config"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// maxUIDSkips bounds how many ids one user step skips because privd found
// them in use on the host (another account, or processes still running
// as the id) before it gives up and says so.
const maxUIDSkips = 64

// stepUser makes the project's Linux user with an id that no project ever
// had: the store hands out each id of project_uids once (store.AllocateUID)
// and the project keeps it across runs and crashes (Status.AllocatedUID),
// so whatever a destroyed project left on the host — a setuid file in
// /tmp, a process it detached — can never act for a later one. An id privd
// finds in use is recorded as taken and never offered again.
func stepUser(ctx context.Context, t *Task) (string, error) {
	ids := t.opt.ProjectUIDs
	if ids == (config.UIDRange{}) {
		ids = config.Default().ProjectUIDs
	}
	var skipped []string
	for {
		uid := t.Project.Status.AllocatedUID
		if uid == 0 {
			var err error
			if uid, err = t.allocateUID(ctx, ids); err != nil {
				return "", err
			}
		}
		res, err := t.Privd.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: t.Project.Name, Uid: uid})
		if status.Code(err) == codes.AlreadyExists {
			why := status.Convert(err).Message()
			t.Log.Warn("project uid in use on the host; skipping it for good", "uid", uid, "why", why)
			if len(skipped) >= maxUIDSkips {
				return "", fmt.Errorf("user: %d project uids in a row are in use on this host (last: %s); free them or move project_uids in opus.conf (opusctl doctor lists what uses the range)", len(skipped)+1, why)
			}
			skipped = append(skipped, fmt.Sprint(uid))
			if err := t.skipUID(ctx, uid, why); err != nil {
				return "", err
			}
			continue
		}
		if err != nil {
			return "", privdErr("EnsureUser", err)
		}
		if err := t.Update(ctx, func(p *store.Project) {
			p.Status.SystemUser, p.Status.UID, p.Status.GID = res.GetUser(), res.GetUid(), res.GetGid()
		}); err != nil {
			return "", err
		}
		msg := fmt.Sprintf("user %s (uid %d) exists", res.GetUser(), res.GetUid())
		if res.GetCreated() {
			msg = fmt.Sprintf("created user %s (uid %d)", res.GetUser(), res.GetUid())
		}
		if len(skipped) > 0 {
			msg += fmt.Sprintf("; skipped uids in use on the host: %v", skipped)
		}
		return msg, nil
	}
}

// allocateUID records a fresh id for the project, in the same transaction
// as the project's status, so that a crash cannot lose or double it.
func (t *Task) allocateUID(ctx context.Context, ids config.UIDRange) (uint32, error) {
	var p *store.Project
	err := t.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		var err error
		if p, err = tx.Project(t.Project.Name); err != nil {
			return err
		}
		if p.Status.AllocatedUID != 0 {
			return nil
		}
		if p.Status.AllocatedUID, err = tx.AllocateUID(p.Name, ids.First, ids.Last); err != nil {
			return err
		}
		return tx.PutProject(p)
	})
	if errors.Is(err, store.ErrUIDsExhausted) {
		return 0, fmt.Errorf("no id is left for the project's user: %w; the host administrator must widen project_uids in opus.conf", err)
	}
	if err != nil {
		return 0, fmt.Errorf("allocate the project user's id: %w", err)
	}
	t.Project = p
	return p.Status.AllocatedUID, nil
}

// skipUID records uid as taken and clears it from the project, so the next
// allocation gives it another.
func (t *Task) skipUID(ctx context.Context, uid uint32, why string) error {
	var p *store.Project
	err := t.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		var err error
		if p, err = tx.Project(t.Project.Name); err != nil {
			return err
		}
		if err := tx.MarkUIDTaken(uid, why); err != nil {
			return err
		}
		p.Status.AllocatedUID = 0
		return tx.PutProject(p)
	})
	if err != nil {
		return fmt.Errorf("user: record uid %d as taken: %w", uid, err)
	}
	t.Project = p
	return nil
}
