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

# tor: `serve --onion` publishes the API through tor's control port, and tests/test_tor_onion.py
# runs a tor of its own with DisableNetwork 1. Nothing may reach the Tor network: the package's
# system service is kept from starting (a policy-rc.d refusing every start during the install,
# removed afterwards), disabled, and any tor it started anyway is stopped. A tor that was already
# installed is the operator's (perhaps the very proxy of KACCY_PROXY): it is left as it is.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
if ! installed tor; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  policy=/usr/sbin/policy-rc.d
  kept=""
  if [ -e "$policy" ]; then kept=$(mktemp); $sudo cp -p "$policy" "$kept"; fi
  restore_policy() {
    if [ -n "$kept" ]; then $sudo cp -p "$kept" "$policy"; $sudo rm -f "$kept"; else $sudo rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# kaccy-bitcoin scripts/setup.sh: no service starts while tor is installed\nexit 101\n' \
    | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  echo "installing tor (its system service kept from starting)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tor >&2 || {
    $sudo apt-get update -q >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tor >&2; }
  restore_policy
  trap - EXIT
  # The system service never starts at boot either; a system tor left running (its pid file) is stopped.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now tor.service tor@default.service >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/tor ]; then
    $sudo update-rc.d tor disable >/dev/null 2>&1 || true
  fi
  for pidfile in /run/tor/tor.pid /var/run/tor/tor.pid; do
    if [ -s "$pidfile" ] && pid=$(cat "$pidfile") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tor ]; then
      $sudo kill "$pid" || true
    fi
  done
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.kaccy-installed"
digest=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -e "$here[test]" >&2
  echo "$digest" > "$stamp"
fi
