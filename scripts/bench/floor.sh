#!/bin/sh
# floor.sh: the irreducible work of deploying a one-app Django project
# (examples/hello with the admin and a superuser) behind Apache + mod_wsgi,
# done by hand: ONE Python process for migrate + createsuperuser +
# collectstatic, an ECDSA P-256 certificate, the backend (its own Apache
# and mod_wsgi daemon) and the front's vhost, the backend's start, one
# graceful restart of the front, one request. What Opus does beyond this is its overhead.
#
#   APACHE_DIR=... HTTP_PORT=... HTTPS_PORT=... WORK=... scripts/bench/floor.sh
#
# See common.sh for the variables and the output.
. "$(dirname "$0")/common.sh"

make_user
step user
cp -r "$EXAMPLES/hello" "$CODE/hello"
mkdir -p "$CODE/benchsite"
: >"$CODE/benchsite/__init__.py"
cat >"$CODE/benchsite/settings.py" <<PY
SECRET_KEY = "bench-only-$(tr -dc a-z0-9 </dev/urandom | head -c 40)"
DEBUG = False
ALLOWED_HOSTS = ["$HOST"]
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles", "hello"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.contrib.sessions.middleware.SessionMiddleware",
              "django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware", "django.contrib.messages.middleware.MessageMiddleware"]
ROOT_URLCONF = "benchsite.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                          "django.contrib.auth.context_processors.auth", "django.contrib.messages.context_processors.messages"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "$DIR/data/db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = "$DIR/static"
PY
cat >"$CODE/benchsite/urls.py" <<'PY'
from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("hello/", include("hello.urls"))]
PY
cat >"$CODE/wsgi.py" <<'PY'
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
PY
secure
step files

as_user "$PYTHON" -c '
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
call_command("createsuperuser", interactive=False, username="admin", email="admin@example.com", verbosity=0)
call_command("collectstatic", interactive=False, verbosity=0)
'
step python

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	-subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" -addext "basicConstraints=critical,CA:FALSE" \
	-keyout "$DIR/tls.key" -out "$DIR/tls.crt" 2>/dev/null
serve "$CODE/wsgi.py"
