package service

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opus-hosting/opus/internal/names"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var phases = map[store.Phase]opusv1.Phase{
	store.PhasePending: opusv1.Phase_PHASE_PENDING, store.PhaseDeploying: opusv1.Phase_PHASE_DEPLOYING,
	store.PhaseReady: opusv1.Phase_PHASE_READY, store.PhaseFailed: opusv1.Phase_PHASE_FAILED,
	store.PhaseDeleting: opusv1.Phase_PHASE_DELETING,
}

var opKinds = map[store.OpKind]opusv1.OperationKind{
	store.OpCreate: opusv1.OperationKind_OPERATION_KIND_CREATE, store.OpDelete: opusv1.OperationKind_OPERATION_KIND_DELETE,
	store.OpAddApp: opusv1.OperationKind_OPERATION_KIND_ADD_APP, store.OpRemoveApp: opusv1.OperationKind_OPERATION_KIND_REMOVE_APP,
	store.OpUpdateApp: opusv1.OperationKind_OPERATION_KIND_UPDATE_APP, store.OpSetCertificate: opusv1.OperationKind_OPERATION_KIND_SET_CERTIFICATE,
	store.OpReconcile: opusv1.OperationKind_OPERATION_KIND_RECONCILE, store.OpUpdateSettings: opusv1.OperationKind_OPERATION_KIND_UPDATE_SETTINGS,
	store.OpRollback: opusv1.OperationKind_OPERATION_KIND_ROLLBACK,
	store.OpRestore:  opusv1.OperationKind_OPERATION_KIND_RESTORE,
	store.OpMove:     opusv1.OperationKind_OPERATION_KIND_MOVE,
	store.OpDepart:   opusv1.OperationKind_OPERATION_KIND_DEPART,
}

var opStates = map[store.OpState]opusv1.OperationState{
	store.OpPending: opusv1.OperationState_OPERATION_STATE_PENDING, store.OpRunning: opusv1.OperationState_OPERATION_STATE_RUNNING,
	store.OpSucceeded: opusv1.OperationState_OPERATION_STATE_SUCCEEDED, store.OpFailed: opusv1.OperationState_OPERATION_STATE_FAILED,
}

var stepStates = map[store.StepState]opusv1.StepState{
	store.StepRunning: opusv1.StepState_STEP_STATE_RUNNING, store.StepDone: opusv1.StepState_STEP_STATE_DONE,
	store.StepFailed: opusv1.StepState_STEP_STATE_FAILED, store.StepSkipped: opusv1.StepState_STEP_STATE_SKIPPED,
}

func toOperation(op *store.Operation) *opusv1.Operation {
	out := &opusv1.Operation{
		Id: op.ID, Project: op.Project, Kind: opKinds[op.Kind], State: opStates[op.State],
		Error: op.Error, CreateTime: ts(op.CreateTime), EndTime: ts(op.EndTime),
		OwnerUid: op.OwnerUID, OwnerName: op.OwnerName, Generation: op.Generation, RequestedByUid: op.RequestedBy,
	}
	for _, st := range op.Steps {
		out.Steps = append(out.Steps, &opusv1.Step{Name: st.Name, State: stepStates[st.State],
			StartTime: ts(st.StartTime), EndTime: ts(st.EndTime), Message: st.Message})
	}
	return out
}

func sameOperation(a, b *opusv1.Operation) bool { return proto.Equal(a, b) }

func toSource(a store.AppSpec) *opusv1.AppSource {
	switch {
	case a.Git != nil:
		return &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: a.Git.URL, Ref: a.Git.Ref}}}
	case a.Upload != nil:
		return &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: a.Upload.Digest, Origin: a.Upload.Origin}}}
	}
	return nil
}

// toProject renders a project for the API. The superuser's password and
// the owner's key are never returned.
func (s *Service) toProject(p *store.Project) *opusv1.Project {
	host := p.Name + s.cfg.ServerSuffix
	out := &opusv1.Project{
		Name: p.Name, OwnerUid: p.OwnerUID, OwnerName: p.OwnerName, Phase: phases[p.Status.Phase], LastError: p.Status.LastError,
		CreateTime: ts(p.CreateTime), UpdateTime: ts(p.UpdateTime),
		Generation: p.Generation, ObservedGeneration: p.Status.ObservedGeneration,
		Admin: p.Spec.Admin, ServerName: host, SystemUser: p.Status.SystemUser,
		Certificate: p.Status.Certificate.Kind, CertificateNotAfter: ts(p.Status.Certificate.NotAfter),
		CertificateError: p.Status.Certificate.Error, CertificateErrorTime: ts(p.Status.Certificate.ErrorSince),
		CertificateRenewTime: ts(p.Status.Certificate.RenewAt),
		Settings:             toSettings(p), Database: toDatabase(p.Spec.Database),
	}
	out.Host = p.Host
	if p.Move != nil {
		out.MovingTo = p.Move.To
	}
	if s.unreachable(p) {
		out.Phase = opusv1.Phase_PHASE_UNREACHABLE
	}
	if f := p.Status.LastFailure; f != nil && out.LastError == "" {
		out.LastError, out.LastFailedOperation = f.Error, f.Operation
	}
	if out.SystemUser == "" {
		prefix := s.cfg.UserPrefix
		if prefix == "" {
			prefix = names.DefaultUserPrefix
		}
		out.SystemUser = names.User(prefix, p.Name)
	}
	if p.Spec.Superuser != nil {
		out.SuperuserName = p.Spec.Superuser.Username
	}
	// Built by concatenation, not fmt: this runs once per project of a
	// list.
	httpPort, httpsPort := s.ports(p)
	if httpPort > 0 {
		out.Urls = append(out.Urls, "http://"+host+":"+strconv.Itoa(httpPort)+"/")
	}
	if httpsPort > 0 {
		out.Urls = append(out.Urls, "https://"+host+":"+strconv.Itoa(httpsPort)+"/")
	}
	if len(p.Spec.Apps) > 0 {
		out.Apps = make([]*opusv1.App, 0, len(p.Spec.Apps))
	}
	for _, a := range p.Spec.Apps {
		st := p.Status.Apps[a.Name]
		app := &opusv1.App{Name: a.Name, Source: toSource(a), RequestedRef: a.RequestedRef(), ResolvedCommit: st.ResolvedCommit}
		if len(st.Revisions) > 0 {
			// One allocation for all of an app's revisions.
			revs := make([]opusv1.Revision, len(st.Revisions))
			app.Revisions = make([]*opusv1.Revision, len(st.Revisions))
			for i, r := range st.Revisions {
				revs[i].RequestedRef, revs[i].Resolved, revs[i].Time, revs[i].ByUid = r.RequestedRef, r.Resolved, ts(r.Time), r.ByUID
				revs[i].Number, revs[i].RollbackOf, revs[i].Url, revs[i].Origin = int64(st.RevisionNumber(i)), int64(r.RollbackOf), r.URL, r.Origin
				revs[i].Subject = r.Subject
				if len(p.Snapshots) > 0 {
					if snap := snapshot.ForRollback(p.Snapshots, a.Name, st.RevisionNumber(i)); snap != nil {
						revs[i].DataSnapshot = snap.ID
					}
				}
				app.Revisions[i] = &revs[i]
			}
			app.RunningRevision = revs[len(revs)-1].Number
			app.Pending = !specIsRevision(a, st.Revisions[len(st.Revisions)-1])
		} else {
			app.Pending = true
		}
		out.Apps = append(out.Apps, app)
	}
	for _, snap := range p.Snapshots {
		out.DataSnapshots = append(out.DataSnapshots, toDataSnapshot(snap))
	}
	return out
}

// toDataSnapshot is a data snapshot's record as the API shows it, its
// apps' revisions by name.
func toDataSnapshot(s store.Snapshot) *opusv1.DataSnapshot {
	out := &opusv1.DataSnapshot{Id: s.ID, Time: ts(s.Time), SizeBytes: s.Size, Engine: s.Engine}
	for _, app := range slices.Sorted(maps.Keys(s.Revisions)) {
		out.Revisions = append(out.Revisions, &opusv1.AppRevision{App: app, Number: int64(s.Revisions[app])})
	}
	return out
}
