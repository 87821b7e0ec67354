#!/usr/bin/env bash
# Builds target/debian/sira_<version>_<arch>.deb with dpkg-deb: /usr/bin/sira, the systemd
# unit under /lib/systemd/system, /etc/sira/sira.yaml as a conffile, the `sira` system user
# (systemd-sysusers, from the maintainer scripts), and `sira check` before any restart.
#
#   bash packaging/deb.sh                   # release build, then the package
#   bash packaging/deb.sh --bin PATH        # package an already built binary
#   bash packaging/deb.sh --version 1.2.3   # override the version (tests of upgrades)
#   bash packaging/deb.sh --fast            # gzip -1 instead of xz (tests)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
compress=(-Zxz)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "usage: $0 [--bin PATH] [--version X.Y.Z]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/sira
fi
arch=$(dpkg --print-architecture)
out="target/debian/sira_${version}_${arch}.deb"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -d "$stage/usr/bin"
# Line tables stay in the build tree for profiling; the package ships a stripped binary.
strip -o "$stage/usr/bin/sira" "$bin"
chmod 0755 "$stage/usr/bin/sira"
install -D -m 0644 systemd/sira.service "$stage/lib/systemd/system/sira.service"
install -D -m 0640 conf/sira.yaml "$stage/etc/sira/sira.yaml"
install -D -m 0644 packaging/debian/sysusers.conf "$stage/usr/lib/sysusers.d/sira.conf"
install -D -m 0644 README.md "$stage/usr/share/doc/sira/README.md"
install -d "$stage/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$stage/DEBIAN/$script"
done
echo /etc/sira/sira.yaml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sira
Version: $version
Architecture: $arch
Maintainer: sira developers <sira@localhost>
Depends: libc6, systemd, procps
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/sira-gateway/sira
Description: AI API gateway on Pingora
 Terminates TLS in front of LLM provider APIs (OpenAI, Anthropic, Gemini, Azure OpenAI,
 OpenAI-compatible servers): keys and JWTs, limits and budgets, format translation,
 streaming passthrough, pools with health checks.
CONTROL
mkdir -p target/debian
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$out" >/dev/null
echo "$out"
