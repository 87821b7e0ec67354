#!/usr/bin/env bash
# The .deb installed, upgraded and removed in a throwaway root (dpkg --root, maintainer
# scripts run chrootless with DPKG_ROOT), never on this host. Usage: bash tests/deb.sh [BIN]
# (default target/debug/sira; the package is built with packaging/deb.sh --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/sira}"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
log="$root.log"
fail() { cat "$log" >&2; echo "deb test: $*" >&2; exit 1; }

old=$(bash packaging/deb.sh --bin "$bin" --fast --version 0.0.1)
cp "$old" "$root.old.deb"
new=$(bash packaging/deb.sh --bin "$bin" --fast --version 0.0.2)
cp "$new" "$root.new.deb"
trap 'rm -rf "$root" "$root.old.deb" "$root.new.deb" "$log"' EXIT

mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available" "$root/etc/passwd" "$root/etc/group"
dpkg_root() {
  # The host's own checks of its PATH do not apply to the throwaway root.
  local force=(--force-script-chrootless --force-depends)
  [ "$(id -u)" -eq 0 ] || force+=(--force-not-root)
  dpkg --root="$root" "${force[@]}" --log=/dev/null "$@" 2>>"$log"
}

echo "== install"
dpkg_root -i "$root.old.deb" >/dev/null
[ -x "$root/usr/bin/sira" ] || fail "no /usr/bin/sira"
[ -f "$root/lib/systemd/system/sira.service" ] || fail "no unit"
[ -f "$root/etc/sira/sira.yaml" ] || fail "no config"
grep -q '^sira:' "$root/etc/passwd" || fail "no sira user"
grep -qx /etc/sira/sira.yaml "$root/var/lib/dpkg/info/sira.conffiles" || fail "config is not a conffile"

echo "== upgrade keeps an edited config"
printf '\n# edited by the operator\n' >> "$root/etc/sira/sira.yaml"
# What the service's EnvironmentFile gives it (and so the upgrade's check).
printf 'OPENAI_API_KEY=k\nANTHROPIC_API_KEY=k\nAZURE_OPENAI_KEY=k\n' > "$root/etc/sira/sira.env"
dpkg_root -i "$root.new.deb" >/dev/null
grep -q 'edited by the operator' "$root/etc/sira/sira.yaml" || fail "the upgrade replaced the edited config"
dpkg_root -s sira | grep -q '^Version: 0.0.2' || fail "not upgraded"

echo "== an upgrade with a config the new binary refuses fails, binary aside"
cp "$root/etc/sira/sira.yaml" "$root/good.yaml"
printf 'server: { nonsense: 1 }\n' > "$root/etc/sira/sira.yaml"
if dpkg_root -i "$root.old.deb" >/dev/null 2>&1; then
  fail "an invalid config did not stop the upgrade"
fi
dpkg_root -s sira | grep -q '^Status: install ok half-configured' || fail "not left half-configured"
cp "$root/good.yaml" "$root/etc/sira/sira.yaml"
dpkg_root --configure sira >/dev/null

echo "== remove, then purge"
dpkg_root -r sira >/dev/null
[ ! -e "$root/usr/bin/sira" ] || fail "binary left after remove"
[ -f "$root/etc/sira/sira.yaml" ] || fail "remove took the conffile"
dpkg_root -P sira >/dev/null
[ ! -e "$root/etc/sira/sira.yaml" ] || fail "purge left the conffile"
echo "deb: install, upgrade, refused upgrade, remove, purge ok"
