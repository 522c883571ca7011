#!/usr/bin/env bash
# Creates .venv in the checkout with Easel, its Python client (clients/python) and everything the tests
# need. Idempotent: re-runs only when pyproject.toml, clients/python/pyproject.toml or this script
# changed. Uses a local torch wheel folder (/opt/wheels) when the machine has one.
set -euo pipefail
cd "$(dirname "$0")/.."

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
