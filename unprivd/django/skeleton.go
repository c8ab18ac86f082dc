package django

// The Python files of the skeleton are constants: the same bytes for every
// project. Everything that varies lives in opus.json (and secrets.json),
// written with encoding/json, so no value a user controls is ever spliced
// into Python source.

const initPy = `# The Django project package of an Opus project; rendered by opusd.
`

const managePy = `#!/usr/bin/env python3
"""Django's command-line utility for an Opus project (rendered by opusd; do not edit)."""
import os
import sys


def main():
    code_dir = os.path.dirname(os.path.abspath(__file__))
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opus_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
`

const wsgiPy = `"""WSGI entry point of an Opus project, loaded by mod_wsgi (rendered by opusd; do not edit)."""
import os
import sys

CODE_DIR = os.path.dirname(os.path.abspath(__file__))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)
os.environ["DJANGO_SETTINGS_MODULE"] = "opus_project.settings"

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
`

const settingsPy = `"""Django settings of an Opus project (rendered by opusd; do not edit).

This file is the same for every project. What varies is read from
opus.json beside it (written by opusd) and from the project's
secrets/secrets.json, so changing apps, hosts or the database is a data
change, never an edit of Python code. Works with Django 3.2 through 5.x.
"""
import json
import os
import sys
from pathlib import Path

import django

PACKAGE_DIR = Path(__file__).resolve().parent
CODE_DIR = PACKAGE_DIR.parent
PROJECT_ROOT = CODE_DIR.parent

with open(PACKAGE_DIR / "opus.json", encoding="utf-8") as _f:
    OPUS = json.load(_f)
with open(PROJECT_ROOT / "secrets" / "secrets.json", encoding="utf-8") as _f:
    _SECRETS = json.load(_f)

# Environment variables the owner asked for; never override the real
# environment.
for _key, _value in OPUS.get("env", {}).items():
    os.environ.setdefault(_key, _value)

SECRET_KEY = _SECRETS["secret_key"]
DEBUG = bool(OPUS.get("debug", False))
ALLOWED_HOSTS = list(OPUS.get("allowed_hosts", []))

# Django 4 compares full origins (scheme://host:port); Django 3.2 compares
# host[:port] with the Referer of HTTPS requests.
CSRF_TRUSTED_ORIGINS = list(OPUS.get("csrf_trusted_origins", []))
if django.VERSION < (4, 0):
    CSRF_TRUSTED_ORIGINS = sorted({o.split("://", 1)[-1] for o in CSRF_TRUSTED_ORIGINS})

# The project is served over http as well as https.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
if OPUS.get("admin", False):
    INSTALLED_APPS.insert(0, "django.contrib.admin")
INSTALLED_APPS += list(OPUS.get("installed_apps", []))

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "opus_project.urls"
WSGI_APPLICATION = "wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_DB = OPUS.get("database") or {}
if _DB.get("engine") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _DB.get("name", ""),
            "USER": _DB.get("user", ""),
            "PASSWORD": _SECRETS.get("db_password", ""),
            "HOST": _DB.get("host", ""),
            "PORT": str(_DB["port"]) if _DB.get("port") else "",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(PROJECT_ROOT / "data" / "db.sqlite3"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = OPUS.get("static_url", "/static/")
STATIC_ROOT = str(PROJECT_ROOT / "static")
MEDIA_URL = "/media/"
MEDIA_ROOT = str(PROJECT_ROOT / "data" / "media")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Everything to stderr: mod_wsgi writes it to the project's Apache error log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": sys.stderr, "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
`

const urlsPy = `"""URLs of an Opus project (rendered by opusd; do not edit).

Django's admin is at /admin/ when enabled, and every app that has a urls.py
is at /<app>/; the list comes from opus.json through settings.OPUS.
"""
from django.conf import settings
from django.http import HttpResponse
from django.urls import include, path
from django.utils.html import escape

urlpatterns = []

if settings.OPUS.get("admin", False):
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))

_URL_APPS = list(settings.OPUS.get("url_apps", []))
for _app in _URL_APPS:
    urlpatterns.append(path(_app + "/", include(_app + ".urls")))


def index(request):
    """List the project's apps, so / is never a bare 404."""
    links = ["<li><a href=\"/%s/\">%s</a></li>" % (escape(a), escape(a)) for a in _URL_APPS]
    if settings.OPUS.get("admin", False):
        links.append("<li><a href=\"/admin/\">admin</a></li>")
    title = escape(settings.OPUS.get("project", ""))
    body = "<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1><ul>%s</ul></body></html>" % (
        title,
        title,
        "".join(links),
    )
    return HttpResponse(body)


urlpatterns.append(path("", index, name="opus-index"))
`
