#!/bin/sh
# Installs the Debian packages Opus's tests and demo need, once
# (chromium: the web console's end-to-end test drives it headless; pebble:
# a test ACME CA for the certificates end-to-end test; dpkg-dev and
# lintian: `make deb` and its test; etcd-server: the etcd state store's
# end-to-end tests run /usr/bin/etcd for the run).
set -eu
pkgs="apache2 libapache2-mod-wsgi-py3 python3-django python3-psycopg2 postgresql git curl ca-certificates chromium pebble dpkg-dev lintian etcd-server"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages:$missing (run as root, or: apt-get install$missing)" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts its own apache2 on port 80 when installed with a service
# manager; Opus's managed Apache does not need it.
# Likewise etcd-server's own etcd (on 2379): the tests start theirs on
# free ports, with their own data directory.
