# The two commands of the README. Both install what they need on a fresh Debian 12
# machine (run as root, or with sudo available), then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages that Qt (offscreen and QtWebEngine) needs; see shared/ENVIRONMENT.md.
QT_DEBS := libegl1 libgl1 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 libxkbcommon0 \
	libnss3 libnspr4 libasound2 libgbm1 libxcomposite1 libxdamage1 libxext6 libxfixes3 \
	libxrandr2 libxtst6 libx11-6 libx11-xcb1 libxcb1 libxkbfile1 libbrotli1 fonts-dejavu-core \
	libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxkbcommon-x11-0
# A real Orthanc for the ancestry tests (Debian 12 ships 1.10.1); the tests start their own.
TEST_DEBS := orthanc
BASE_DEBS := python3 python3-venv python3-pip

.PHONY: run test serve lint typecheck clean debs

# Installs the Debian packages named in $(1) that are missing.
define install_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

.stamp-debs: Makefile
	$(call install_debs,$(QT_DEBS))
	@touch $@

# Only the tests need Orthanc; they start their own. On a systemd host the package starts
# a system Orthanc on 8042/4242: stop and disable it, it is not ours.
.stamp-test-debs: Makefile
	$(call install_debs,$(TEST_DEBS))
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled orthanc >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO systemctl disable --now orthanc || true; fi
	@touch $@

# The test identity provider (tests/idp: oidc-provider 8.8.1, which also runs on Debian 12's
# Node.js 18). Reinstalled when the lock file changes or node_modules has gone.
.PHONY: .npm-missing
.stamp-npm: tests/idp/package-lock.json $(if $(wildcard tests/idp/node_modules/oidc-provider/package.json),,.npm-missing)
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
		echo "installing Debian packages: nodejs npm"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; \
	fi
	npm ci --prefix tests/idp --no-audit --no-fund
	@touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[console,test]'
	@touch $@

debs: .stamp-debs

## make run: the desktop console, with its embedded Portico server (a local SQLite database,
## created and migrated on first start; the console asks for the first superuser).
run: .stamp-debs .stamp-install
	$(BIN)/portico

## make serve: the headless server only.
serve: .stamp-install
	$(BIN)/portico serve

## make test: the whole test suite (PostgreSQL tests need 127.0.0.1:5432; in CI they must run).
test: .stamp-debs .stamp-test-debs .stamp-npm .stamp-install
	$(BIN)/python -m pytest

lint: .stamp-install
	$(BIN)/lint-imports

typecheck: .stamp-install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .stamp-* build dist *.egg-info
