#!/usr/bin/env bash
# Creates .venv in the checkout with Easel, its Python client (clients/python) and everything the tests
# need. Idempotent: re-runs only when pyproject.toml, clients/python/pyproject.toml or this script
# changed. Uses a local torch wheel folder (/opt/wheels) when the machine has one.
#
# The console's browser tests (tests/console) drive the system's Chromium through Playwright (never its
# own browser download): on Debian/Ubuntu, as root, a missing `chromium` is installed from the
# distribution's packages; elsewhere install it yourself or point EASEL_CHROMIUM at a Chromium binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${EASEL_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium for the console's browser tests (apt-get install chromium)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  else
    echo "warning: no Chromium found; the console's browser tests need one (apt-get install chromium, or EASEL_CHROMIUM)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
STAMP=.venv/.easel-setup
WANT=$(sha256sum pyproject.toml clients/python/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x .venv/bin/easel ]; then
  exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Easel needs Python 3.11+"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
[ -d /opt/wheels ] && PIP+=(--find-links /opt/wheels)

"${PIP[@]}" --upgrade pip
# torch first, pinned: 2.13.0 is the CPU wheel on these machines (a GPU box gets the CUDA build).
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[engine,postgres,dev,s3]"
# The client (easel_client: httpx only), used by `easel generate --server` and tested in tests/client.
"${PIP[@]}" -e clients/python
echo "$WANT" > "$STAMP"
echo "Easel installed in .venv ($(.venv/bin/easel --version 2>/dev/null || echo ok))"
