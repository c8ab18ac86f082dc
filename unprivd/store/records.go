package store

import "time"

// Project is a project's record: what its owner asked for (Spec, changed
// only by API calls, each bumping Generation) and what is on the host
// (Status, changed only by the reconciler).
type Project struct {
	Name     string `json:"name"`
	OwnerUID uint32 `json:"owner_uid"`
	// OwnerName is the owner's user name on the host the project was
	// made through; where hosts share the state, it, not OwnerUID (which
	// means that host's user alone), says who owns the project. Empty in
	// a record made before it was kept.
	OwnerName string `json:"owner_name,omitempty"`
	// Host is the host that serves the project: only its opusd works on
	// it. Set at create (and by a move); empty in a state written before
	// hosts were named, which the one host of a bbolt store serves.
	Host   string `json:"host,omitempty"`
	Spec   Spec   `json:"spec"`
	Status Status `json:"status"`
	// Generation counts changes to Spec; Status.ObservedGeneration is the
	// one the host last reached.
	Generation int64     `json:"generation"`
	CreateTime time.Time `json:"create_time"`
	UpdateTime time.Time `json:"update_time"`
	// Deleting means the owner asked for the project to go: the reconciler
	// tears it down and then removes this record.
	Deleting bool `json:"deleting,omitempty"`
	// Secrets are the project's own secrets, kept here (the store is
	// opusd's alone) as the truth that the render step writes to the
	// project's secrets file and never reads back. Nil until the first
	// render. The API never returns them.
	Secrets *Secrets `json:"secrets,omitempty"`
	// Applied is the spec the last successful run deployed, the state a
	// failed change goes back to (all or nothing): the reconciler puts
	// Spec back to it when a change fails. It holds no one-time secret
	// (the superuser's password is cleared) and no pending drop of app
	// data. Nil until the project's first deploy succeeds: a failed
	// first deploy removes the project instead.
	Applied *Spec `json:"applied,omitempty"`
	// Move is the project's move to another host while it is under way
	// (unprivd/mover); nil otherwise.
	Move *Move `json:"move,omitempty"`
	// Snapshots are the copies of the project's database opusd keeps
	// (in BaseDir/snapshots/NAME), oldest first, within the configured
	// count and bytes. Written by the reconciler only.
	Snapshots []Snapshot `json:"snapshots,omitempty"`
}

// Move is a project's move from one host to another: the source exports
// its data, the target fetches it over the peer channel (unprivd/peer)
// and deploys its own copy while the source serves on, and one commit then
// makes the target's copy the project and the source's a leftover it
// tears down.
type Move struct {
	// ID names the move's transfer and the data snapshot it carries to
	// the target (a snapshot id).
	ID string `json:"id"`
	// From and To are the source and target hosts.
	From string `json:"from"`
	To   string `json:"to"`
	// Operation is the MOVE operation that reports it.
	Operation string `json:"operation"`
	// Token is the transfer's secret (hex): the target presents it to the
	// source's peer listener. Kept in the store, the root of trust.
	Token string    `json:"token"`
	State MoveState `json:"state"`
	// Files are what the source exported first, while it served on: the
	// database copy and the media files, each with its size and SHA-256.
	// The target's copy is deployed from them.
	Files []MoveFile `json:"files,omitempty"`
	// Last are the same, taken again once the target's copy answered and
	// the source stopped taking writes: what the target loads just
	// before it takes over, so that no write is left behind.
	Last []MoveFile `json:"last,omitempty"`
	Time time.Time  `json:"time"`
}

// MoveFile is one file a move carries.
type MoveFile struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// MoveState is where a move is.
type MoveState string

// Move states, in order.
const (
	// MoveExporting: the source is taking the data.
	MoveExporting MoveState = "EXPORTING"
	// MoveExported: the data waits for the target to fetch it.
	MoveExported MoveState = "EXPORTED"
	// MoveDeploying: the target deploys its copy from the data.
	MoveDeploying MoveState = "DEPLOYING"
	// MoveSyncing: the target's copy answers; the source stops taking
	// writes and takes the data again (Last).
	MoveSyncing MoveState = "SYNCING"
	// MoveLast: the last data waits for the target, which loads it and
	// takes the project over.
	MoveLast MoveState = "LAST"
)

// Snapshot is a copy of a project's database taken before a change ran
// migrations.
type Snapshot struct {
	// ID names it (and its file); unique within the project.
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Size   int64     `json:"size"`
	Engine string    `json:"engine"`
	// Revisions are, per app, the number of the revision it ran when the
	// snapshot was taken (apps not deployed yet are absent).
	Revisions map[string]int `json:"revisions,omitempty"`
	// Generation is the spec generation of the change it was taken for:
	// that change's undo restores it.
	Generation int64 `json:"generation"`
	// Media says the snapshot also holds the project's media files (a
	// tar of data/media, MediaSize bytes): one a restore from a backup
	// brought, or the copy taken before such a restore replaced them.
	Media     bool  `json:"media,omitempty"`
	MediaSize int64 `json:"media_size,omitempty"`
}

// Bytes is what the snapshot takes on the disk: its database copy and its
// media files. Every bound on snapshots (snapshot_max_bytes per project,
// snapshot_quota per owner) and opusctl df count this, not Size alone, or
// media files a restore brought would sit beside the quota uncounted.
func (s Snapshot) Bytes() int64 { return s.Size + s.MediaSize }

// Snapshot returns the snapshot called id, or nil.
func (p *Project) Snapshot(id string) *Snapshot {
	for i := range p.Snapshots {
		if p.Snapshots[i].ID == id {
			return &p.Snapshots[i]
		}
	}
	return nil
}

// Secrets are a project's secrets that are neither asked for by its owner
// (the database password is in Spec.Database) nor rotated.
type Secrets struct {
	// SecretKey is Django's SECRET_KEY, made once (or taken over once from
	// a project made before opusd kept it) and never changed: a new one
	// would log every user out and break signed data.
	SecretKey string `json:"secret_key"`
	// Replaced is the SecretKey a restore from a backup (over the
	// project, not yet deployed) replaced: the undo of that restore, if
	// it fails, puts it back; cleared when a run succeeds.
	Replaced string `json:"replaced,omitempty"`
	// Written is the SHA-256 (hex) of the secrets file as last written to
	// the project: a write whose content differs changes what the
	// project's daemon must load, so it is restarted.
	Written string `json:"written,omitempty"`
}

// Spec is the desired state of a project.
type Spec struct {
	Apps  []AppSpec `json:"apps,omitempty"`
	Admin bool      `json:"admin,omitempty"`
	// Superuser is created on first deploy; its Password is cleared once
	// the superuser step has run, so it is kept no longer than needed.
	Superuser *Superuser `json:"superuser,omitempty"`
	// Certificate is the owner's own TLS certificate, or nil for a
	// self-signed one.
	Certificate *OwnerCertificate `json:"certificate,omitempty"`
	// DropAppData names removed apps whose database tables the next
	// reconcile drops ("migrate APP zero") before forgetting them.
	DropAppData []string `json:"drop_app_data,omitempty"`
	// RestoreSnapshot is the id of a data snapshot the next reconcile
	// puts back before migrating (a rollback with data, or the undo of a
	// failed change that had touched the database); the reconciler
	// clears it once done (a status-like change).
	RestoreSnapshot string `json:"restore_snapshot,omitempty"`
	// Settings are the owner-level settings (Admin above is the admin
	// switch of the API's Settings).
	Settings Settings `json:"settings"`
	// Database is a PostgreSQL database given by its connection
	// parameters or provisioned by Opus; nil means SQLite in the
	// project's data directory.
	Database *Database `json:"database,omitempty"`
}

// Database is a PostgreSQL database the owner gave by its connection
// parameters, or one Opus provisioned for the project.
type Database struct {
	Engine string `json:"engine"`
	Host   string `json:"host,omitempty"`
	Port   int    `json:"port,omitempty"`
	Name   string `json:"name"`
	User   string `json:"user,omitempty"`
	// Password is kept here (the store is opusd's alone) so every render
	// can write it to the project's secrets; the API never returns it.
	Password string `json:"password,omitempty"`
	// Provisioned says Opus created the role and the database (with a
	// generated Password), so teardown drops them; a database given by
	// its connection parameters is never dropped.
	Provisioned bool `json:"provisioned,omitempty"`
}

// Settings are a project's owner-level settings. They reach the host only
// as data: JSON that settings.py reads, and structured fields of privd's
// InstallSite (ServerAlias names privd validates again).
type Settings struct {
	// Debug turns Django's DEBUG on.
	Debug bool `json:"debug,omitempty"`
	// Hosts are extra host names: ServerAlias, ALLOWED_HOSTS and names
	// of the self-signed certificate.
	Hosts []string `json:"hosts,omitempty"`
	// Env are environment variables for the app.
	Env map[string]string `json:"env,omitempty"`
	// MemoryBytes, Tasks and CPUPercent bound the project's backend in
	// place of the host's defaults; 0 is the default. Admins' alone.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	Tasks       int   `json:"tasks,omitempty"`
	CPUPercent  int   `json:"cpu_percent,omitempty"`
}

// App returns the app called name, or nil.
func (s *Spec) App(name string) *AppSpec {
	for i := range s.Apps {
		if s.Apps[i].Name == name {
			return &s.Apps[i]
		}
	}
	return nil
}

// AppSpec is an app as the owner asks for it. Exactly one of Git and Upload
// is set.
type AppSpec struct {
	Name   string        `json:"name"`
	Git    *GitSource    `json:"git,omitempty"`
	Upload *UploadSource `json:"upload,omitempty"`
	// ByUID is the caller who last set this app's source.
	ByUID uint32 `json:"by_uid"`
	// RollbackTo is the number of the revision a rollback set this
	// source back to (0 for any other change), so the revision it
	// deploys says so.
	RollbackTo int `json:"rollback_to,omitempty"`
}

// RequestedRef is the git ref or the upload digest asked for.
func (a AppSpec) RequestedRef() string {
	switch {
	case a.Git != nil:
		return a.Git.Ref
	case a.Upload != nil:
		return a.Upload.Digest
	}
	return ""
}

// GitSource is an app cloned from a git repository.
type GitSource struct {
	URL string `json:"url"`
	Ref string `json:"ref,omitempty"`
}

// UploadSource is an app from an uploaded archive.
type UploadSource struct {
	Digest string `json:"digest"`
	Origin string `json:"origin,omitempty"`
	// UploaderUID is whose upload it is: the archive is kept in that
	// user's part of the upload store, against their quota. nil only in
	// records made before uploads had owners, until opusd adopts them at
	// start (see service.AdoptLegacyUploads).
	UploaderUID *uint32 `json:"uploader_uid,omitempty"`
}

// Superuser is the Django admin account to create.
type Superuser struct {
	Username string `json:"username"`
	Email    string `json:"email,omitempty"`
	Password string `json:"password,omitempty"`
}

// OwnerCertificate is a TLS certificate (leaf then chain) and its key as
// PEM, given by the owner.
type OwnerCertificate struct {
	CertificatePEM []byte `json:"certificate_pem"`
	KeyPEM         []byte `json:"key_pem"`
}

// Phase is where a project is in its life.
type Phase string

// Phases.
const (
	PhasePending   Phase = "PENDING"
	PhaseDeploying Phase = "DEPLOYING"
	PhaseReady     Phase = "READY"
	PhaseFailed    Phase = "FAILED"
	PhaseDeleting  Phase = "DELETING"
)

// Phases are every Phase, in the order of a project's life.
var Phases = []Phase{PhasePending, PhaseDeploying, PhaseReady, PhaseFailed, PhaseDeleting}

// Status is what the reconciler last found and did on the host.
type Status struct {
	Phase              Phase  `json:"phase"`
	LastError          string `json:"last_error,omitempty"`
	ObservedGeneration int64  `json:"observed_generation"`
	// AllocatedUID is the id opusd handed this project from project_uids
	// (recorded in the uids bucket, never handed out again); its user is
	// made with it. 0 until the user step allocated one.
	AllocatedUID uint32 `json:"allocated_uid,omitempty"`
	// SystemUser, UID and GID are the project's Linux account (a project
	// made before ids were allocated keeps the uid it had).
	SystemUser string `json:"system_user,omitempty"`
	UID        uint32 `json:"uid,omitempty"`
	GID        uint32 `json:"gid,omitempty"`
	// Apps is per app name: what is deployed and its history.
	Apps map[string]AppStatus `json:"apps,omitempty"`
	// Certificate is the certificate in use.
	Certificate CertificateStatus `json:"certificate"`
	// Superuser is the user name of the Django superuser the superuser
	// step created, empty before.
	Superuser string `json:"superuser,omitempty"`
	// ReloadPending says a changed vhost is installed that Apache has not
	// loaded yet: set when the vhost step changes it, cleared after the
	// graceful restart, so a crash between the two still reloads.
	ReloadPending bool `json:"reload_pending,omitempty"`
	// LastFailure is the last change that failed and was undone: the
	// project serves its previous state (phase READY) and this says why
	// the change did not happen. Cleared when a later change succeeds.
	LastFailure *Failure `json:"last_failure,omitempty"`
}

// Failure is a change that failed and was undone.
type Failure struct {
	// Operation is the failed operation's id.
	Operation string `json:"operation"`
	// Error is its error.
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// AppStatus is an app as deployed: what the last successful run applied.
// A failed run does not change it (its code is put back), so it is also
// what a failed run restores.
type AppStatus struct {
	RequestedRef   string     `json:"requested_ref,omitempty"`
	ResolvedCommit string     `json:"resolved_commit,omitempty"`
	Revisions      []Revision `json:"revisions,omitempty"`
}

// Revision is one version an app has been at: a run that deployed it
// succeeded.
type Revision struct {
	// URL is the git repository it came from (empty for an upload), so a
	// rollback finds the commit even after the app moved to another
	// repository.
	URL          string    `json:"url,omitempty"`
	RequestedRef string    `json:"requested_ref,omitempty"`
	Resolved     string    `json:"resolved"`
	Time         time.Time `json:"time"`
	ByUID        uint32    `json:"by_uid"`
	// UploaderUID is whose upload an uploaded revision's archive is (see
	// UploadSource.UploaderUID); nil for git.
	UploaderUID *uint32 `json:"uploader_uid,omitempty"`
	// Number is the revision's number in its app's history, 1 for the
	// first, kept when older revisions are dropped, so it names the same
	// revision for as long as it is listed. 0 in records made before
	// revisions were numbered: see AppStatus.RevisionNumber.
	Number int `json:"number,omitempty"`
	// RollbackOf is the number of the revision a rollback returned to,
	// when this revision is one.
	RollbackOf int `json:"rollback_of,omitempty"`
	// Origin is where an uploaded revision was packed from
	// (informational, as UploadSource.Origin).
	Origin string `json:"origin,omitempty"`
	// Subject is a git revision's commit subject, one line of printable
	// text (source.CommitSubject); empty for an upload and in records
	// made before subjects were recorded.
	Subject string `json:"subject,omitempty"`
}

// RevisionNumber is the number of st.Revisions[i]: its own, or for a
// record made before revisions were numbered, its position from 1.
func (st AppStatus) RevisionNumber(i int) int {
	if n := st.Revisions[i].Number; n > 0 {
		return n
	}
	return i + 1
}

// AddRevision appends r to st's history as the next number and keeps only
// the last keep revisions. Unnumbered (older) revisions get their numbers
// written first, so dropping the oldest does not renumber the rest.
func (st *AppStatus) AddRevision(r Revision, keep int) {
	next := 1
	for i := range st.Revisions {
		st.Revisions[i].Number = st.RevisionNumber(i)
		next = st.Revisions[i].Number + 1
	}
	r.Number = next
	st.Revisions = append(st.Revisions, r)
	if n := len(st.Revisions); keep > 0 && n > keep {
		st.Revisions = st.Revisions[n-keep:]
	}
}

// CertificateStatus says which certificate is installed.
type CertificateStatus struct {
	// Kind is "self-signed", "owner" or "acme" (from the host's ACME CA),
	// empty before one is installed.
	Kind     string    `json:"kind,omitempty"`
	NotAfter time.Time `json:"not_after"`
	// The rest is about certificates from the ACME CA, kept while the
	// project's certificate comes from it (zero without ACME).
	//
	// Serial is the installed ACME certificate's serial number (hex).
	Serial string `json:"serial,omitempty"`
	// RenewAt is when opusd next asks the CA: a third of the installed
	// certificate's lifetime before it expires, or the next try after a
	// failure (backoff).
	RenewAt time.Time `json:"renew_at,omitzero"`
	// Error says why the last try to obtain a certificate from the CA
	// failed, empty when it succeeded; ErrorSince is when the failing
	// tries began and Failures counts them. The installed certificate
	// keeps serving meanwhile.
	Error      string    `json:"error,omitempty"`
	ErrorSince time.Time `json:"error_since,omitzero"`
	Failures   int       `json:"failures,omitempty"`
}

// OpKind is what an operation does.
type OpKind string

// Operation kinds.
const (
	OpCreate         OpKind = "CREATE"
	OpDelete         OpKind = "DELETE"
	OpAddApp         OpKind = "ADD_APP"
	OpRemoveApp      OpKind = "REMOVE_APP"
	OpUpdateApp      OpKind = "UPDATE_APP"
	OpSetCertificate OpKind = "SET_CERTIFICATE"
	OpUpdateSettings OpKind = "UPDATE_SETTINGS"
	OpReconcile      OpKind = "RECONCILE"
	// OpRollback moves an app back to one of its recorded revisions.
	OpRollback OpKind = "ROLLBACK"
	// OpRestore makes (or remakes) a project from a backup.
	OpRestore OpKind = "RESTORE"
	// OpMove moves a project to another host with its data.
	OpMove OpKind = "MOVE"
	// OpDepart removes the copy of a moved project from the host it left.
	OpDepart OpKind = "DEPART"
)

// OpKinds are every OpKind.
var OpKinds = []OpKind{OpCreate, OpDelete, OpAddApp, OpRemoveApp, OpUpdateApp, OpSetCertificate, OpUpdateSettings, OpReconcile, OpRollback, OpRestore, OpMove, OpDepart}

// OpState is where an operation is.
type OpState string

// Operation states.
const (
	OpPending   OpState = "PENDING"
	OpRunning   OpState = "RUNNING"
	OpSucceeded OpState = "SUCCEEDED"
	OpFailed    OpState = "FAILED"
)

// Final reports whether the state is one an operation never leaves.
func (s OpState) Final() bool { return s == OpSucceeded || s == OpFailed }

// StepState is where one step is.
type StepState string

// Step states.
const (
	StepRunning StepState = "RUNNING"
	StepDone    StepState = "DONE"
	StepFailed  StepState = "FAILED"
	StepSkipped StepState = "SKIPPED"
)

// Operation is long work on a project, driven by the reconciler.
type Operation struct {
	ID      string  `json:"id"`
	Project string  `json:"project"`
	Kind    OpKind  `json:"kind"`
	State   OpState `json:"state"`
	Steps   []Step  `json:"steps,omitempty"`
	Error   string  `json:"error,omitempty"`
	// OwnerUID is the project's owner when the operation was made; it
	// decides who may see the operation, even after the project is gone.
	OwnerUID uint32 `json:"owner_uid"`
	// OwnerName is the project's OwnerName when the operation was made.
	OwnerName string `json:"owner_name,omitempty"`
	// RequestedBy is the uid of the caller who caused it.
	RequestedBy uint32 `json:"requested_by"`
	// Generation is the spec generation the operation drives to.
	Generation int64     `json:"generation"`
	CreateTime time.Time `json:"create_time"`
	EndTime    time.Time `json:"end_time"`
	// Seq orders a project's operations (see the project_ops bucket).
	Seq uint64 `json:"seq"`
}

// Step is one reconcile step of an operation.
type Step struct {
	Name      string    `json:"name"`
	State     StepState `json:"state"`
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	Message   string    `json:"message,omitempty"`
}
