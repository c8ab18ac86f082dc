#!/bin/sh
# seed.sh: the seed's deploy procedure for the same one-app project as
# floor.sh: `django-admin startproject`, one manage.py process per step
# (migrate, createsuperuser, collectstatic), an RSA-2048 certificate from
# openssl, the backend and the vhost, the backend's start, a graceful restart, the first request.
#
#   APACHE_DIR=... HTTP_PORT=... HTTPS_PORT=... WORK=... scripts/bench/seed.sh
#
# See common.sh for the variables and the output.
. "$(dirname "$0")/common.sh"

make_user
step user
"$PYTHON" -m django startproject benchsite "$CODE"
step startproject
cp -r "$EXAMPLES/hello" "$CODE/hello"
cat >>"$CODE/benchsite/settings.py" <<PY

# Added by the seed procedure.
ALLOWED_HOSTS = ["$HOST"]
DEBUG = False
INSTALLED_APPS += ["hello"]
DATABASES["default"]["NAME"] = "$DIR/data/db.sqlite3"
STATIC_ROOT = "$DIR/static"
PY
cat >"$CODE/benchsite/urls.py" <<'PY'
from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("hello/", include("hello.urls"))]
PY
secure
step files

as_user "$PYTHON" manage.py migrate --noinput >/dev/null
step migrate
as_user "$PYTHON" manage.py createsuperuser --noinput --username=admin --email=admin@example.com >/dev/null
step createsuperuser
as_user "$PYTHON" manage.py collectstatic --noinput >/dev/null
step collectstatic

openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$HOST" \
	-keyout "$DIR/tls.key" -out "$DIR/tls.crt" 2>/dev/null
serve "$CODE/benchsite/wsgi.py"
