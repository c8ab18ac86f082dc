package snapshot

import "syscall"

// noFollow: a snapshot's name is never followed as a link.
const noFollow = syscall.O_NOFOLLOW
