#!/usr/bin/env bash
# Prints the path of a runnable regtest-capable `bitcoind`, installing one if needed.
#
# Order of preference: $BITCOIND, a `bitcoind` on PATH, the project's cached copy.
# The cached copy is Debian unstable's bitcoin-knots (same RPC as Bitcoin Core 29),
# whose binaries need a newer glibc/libstdc++ than this release: they are unpacked
# with the libraries they need into .cache/bitcoind and started through that
# glibc's own dynamic loader by small wrapper scripts. Idempotent.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache="${KACCY_CACHE_DIR:-$here/.cache}/bitcoind"
wrapper="$cache/bin/bitcoind"

works() { "$1" -version >/dev/null 2>&1; }

if [ -n "${BITCOIND:-}" ] && works "$BITCOIND"; then echo "$BITCOIND"; exit 0; fi
if command -v bitcoind >/dev/null 2>&1 && works "$(command -v bitcoind)"; then command -v bitcoind; exit 0; fi
if [ -x "$wrapper" ] && works "$wrapper"; then echo "$wrapper"; exit 0; fi

echo "installing bitcoin-knots from Debian unstable into $cache" >&2
# The mirror comes from this machine's own apt configuration.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
touch "$work/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
          -o "Dir::State::status=$work/status" -o "APT::Architecture=amd64"
          -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update >&2
pkgs=(bitcoin-knots libc6 libstdc++6 libgcc-s1 libevent-core-2.1-7t64 libevent-extra-2.1-7t64
      libevent-pthreads-2.1-7t64 libzmq5 libsodium26 libpgm-5.3-0t64 libnorm1t64 libbsd0 libmd0 libsqlite3-0)
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done

rm -rf "$cache.new"
mkdir -p "$cache.new/bin"
mv "$work/root/usr/lib/x86_64-linux-gnu" "$cache.new/lib"
mv "$work/root/usr/bin" "$cache.new/libexec"
for tool in bitcoind bitcoin-cli; do
  cat > "$cache.new/bin/$tool" <<SH
#!/bin/sh
d=\$(cd "\$(dirname "\$0")/.." && pwd)
exec "\$d/lib/ld-linux-x86-64.so.2" --library-path "\$d/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "\$d/libexec/$tool" "\$@"
SH
  chmod +x "$cache.new/bin/$tool"
done
rm -rf "$cache"
mv "$cache.new" "$cache"
works "$wrapper" || { echo "installed bitcoind does not start" >&2; exit 1; }
echo "$wrapper"
