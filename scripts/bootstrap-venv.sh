#!/bin/sh
# Create a virtualenv with pip, on a machine that may lack Debian's python3-venv/ensurepip.
# Usage: bootstrap-venv.sh PYTHON VENV_DIR
set -eu
PY="$1"
VENV="$2"
if "$PY" -m venv "$VENV" 2>/dev/null; then
    :
else
    echo "bootstrap-venv: '$PY -m venv' failed (no ensurepip?); creating $VENV without pip" >&2
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV"
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "bootstrap-venv: installing pip into $VENV from the package index" >&2
    "$VENV/bin/python" - <<'PYEOF'
import json, os, subprocess, sys, tempfile, urllib.request
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
base = index[: -len("/simple")] if index.endswith("/simple") else index
with urllib.request.urlopen(f"{base}/pypi/pip/json", timeout=60) as r:
    info = json.load(r)
url = next(u["url"] for u in info["urls"] if u["filename"].endswith(".whl"))
path = os.path.join(tempfile.mkdtemp(), url.rsplit("/", 1)[-1])
urllib.request.urlretrieve(url, path)
subprocess.check_call([sys.executable, f"{path}/pip", "install", "--quiet", path])
PYEOF
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
