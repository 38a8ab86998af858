#!/usr/bin/env bash
# Idempotent set-up used by `make run` and `make test`: system libraries, the
# virtualenv, the package (editable) with its test extras.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
python="${PYTHON:-python3}"

need=()
# chromium and its driver: the dashboard's end-to-end test runs the page in headless Chromium.
# zbar-tools: the checkout page's test decodes the QR code of a screenshot with zbarimg.
# pgbouncer: tests/test_leadership_pooling.py runs one in front of the test PostgreSQL.
for pkg in libsecp256k1-1 libusb-1.0-0 chromium chromium-driver zbar-tools pgbouncer; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system libraries: ${need[*]}" >&2
  $sudo apt-get install -y -q "${need[@]}" >&2 || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q "${need[@]}" >&2; }
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.kaccy-installed"
digest=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -e "$here[test]" >&2
  echo "$digest" > "$stamp"
fi
