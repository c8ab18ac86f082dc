#!/bin/sh
# make deb: builds dist/opus_VERSION_ARCH.deb with dpkg-deb from a tree
# assembled in a temporary directory: the three binaries, the units from
# systemd/ (ExecStart under /usr/sbin), the default /etc/opus/opus.conf as
# a conffile, README, man pages, copyright, changelog, md5sums and the
# maintainer scripts beside this file. Prints the package's path.
#
# The version is VERSION (the Makefile's) for a tree that is not a git
# checkout, else VERSION~gitDATE.COMMIT (a snapshot before the VERSION
# release; DATE is the commit's, so later commits sort higher), and "-1"
# as the Debian revision. File times in the package are the commit's
# (SOURCE_DATE_EPOCH), not the build's.
set -eu
cd "$(dirname "$0")/../.."
here=scripts/deb
GO=${GO:-go}
VERSION=${VERSION:-0.1.0}
OUT=${DEB_OUT:-dist}

for tool in dpkg-deb dpkg-shlibdeps; do
	command -v "$tool" >/dev/null || { echo "deb: needs $tool (apt-get install dpkg-dev)" >&2; exit 1; }
done
arch=$(dpkg --print-architecture)
if [ "$($GO env GOARCH)" != "$arch" ]; then
	echo "deb: go builds for $($GO env GOARCH), dpkg's architecture is $arch" >&2
	exit 1
fi

if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
	upstream="$VERSION~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S).$commit"
	what="Snapshot of commit $commit."
else
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
	upstream=$VERSION
	what="Release $VERSION."
fi
export SOURCE_DATE_EPOCH
version="$upstream-1"
# The maintainer: DEB_MAINTAINER, else the author of the commit built.
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
[ -n "$maintainer" ] || { echo "deb: set DEB_MAINTAINER (NAME <EMAIL>): there is no commit to take it from" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/opus
doc=$root/usr/share/doc/opus
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/sbin" "$root/lib/systemd/system" \
	"$root/etc/opus" "$doc" "$root/usr/share/man/man1" "$root/usr/share/man/man8" \
	"$root/usr/share/lintian/overrides"

# Stripped of the symbol table and DWARF only: a panic still prints its
# stack with function names and lines (they are in pclntab). Position
# independent and linked with full RELRO, as Debian's hardening asks.
build() {
	$GO build -trimpath -buildmode=pie \
		-ldflags "-s -w -X main.version=$version -linkmode=external -extldflags=-Wl,-z,relro,-z,now" \
		-o "$2" "./cmd/$1"
}
build opusctl "$root/usr/bin/opusctl"
build opusd "$root/usr/sbin/opusd"
build opus-privd "$root/usr/sbin/opus-privd"

# install.sh's rule with PREFIX=/usr.
for u in opusd.service opusd.socket opus-privd.service opus-privd.socket opus-backend@.service; do
	sed 's|/usr/local/|/usr/|g' "systemd/$u" >"$root/lib/systemd/system/$u"
done
cp systemd/opus.conf "$root/etc/opus/opus.conf"
# Uncompressed: the units' Documentation= names it.
cp README.md "$doc/README.md"
cp "$here/copyright" "$doc/copyright"
cp "$here/lintian-overrides" "$root/usr/share/lintian/overrides/opus"
{
	echo "opus ($version) unstable; urgency=medium"
	echo
	echo "  * $what"
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.Debian.gz"
gzip -9n <"$here/opusctl.1" >"$root/usr/share/man/man1/opusctl.1.gz"
gzip -9n <"$here/opusd.8" >"$root/usr/share/man/man8/opusd.8.gz"
gzip -9n <"$here/opus-privd.8" >"$root/usr/share/man/man8/opus-privd.8.gz"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/usr/bin/opusctl" "$root/usr/sbin/opusd" "$root/usr/sbin/opus-privd"

# The C library the binaries link (cgo: os/user and net use the host's NSS).
mkdir "$work/debian"
printf 'Source: opus\n\nPackage: opus\nArchitecture: any\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O opus/usr/bin/opusctl opus/usr/sbin/opusd opus/usr/sbin/opus-privd |
	sed -n 's/^shlibs:Depends=//p')
depends_shlibs=${shlibs:+, $shlibs}

cp "$here/conffiles" "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@SIZE@|$size|" -e "s|, @SHLIBS@|$depends_shlibs|" "$here/control" >"$root/DEBIAN/control"

mkdir -p "$OUT"
deb="$OUT/opus_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
