#!/bin/sh
# Fetches the pinned axe-core (the accessibility engine e2e/a11y18_test.go
# runs in Chromium) from the npm registry into e2e/testdata/axe/, checking
# the package's sha256 before anything is unpacked. To update: set VERSION
# and SHA256 (run once with SHA256=new to print the tarball's sum, check it
# against `npm view axe-core@VERSION dist.integrity`), run `make axe`, rerun
# TestConsoleAccessible, commit.
set -eu

VERSION=4.14.1
# sha256 of axe-core-$VERSION.tgz as the registry serves it (its sha512
# integrity, FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==,
# was checked by npm pack when this was pinned).
SHA256=${SHA256:-e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745}

here=$(cd "$(dirname "$0")/.." && pwd)
dest=$here/e2e/testdata/axe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && timeout 120 npm pack --silent "axe-core@$VERSION" >/dev/null)
tgz=$tmp/axe-core-$VERSION.tgz
got=$(sha256sum "$tgz" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
	echo "axe-core-$VERSION.tgz has sha256 $got, want $SHA256: not installed" >&2
	exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/axe.min.js package/LICENSE package/LICENSE-3RD-PARTY.txt
mkdir -p "$dest"
for f in axe.min.js LICENSE LICENSE-3RD-PARTY.txt; do
	install -m 0644 "$tmp/package/$f" "$dest/$f"
done
echo "axe-core $VERSION in $dest"
