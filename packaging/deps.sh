#!/usr/bin/env bash
# Installs what building and testing sira needs on a fresh Debian/Ubuntu machine, and
# nothing when it is already there. Pingora's zlib-ng build needs cmake; pkg-config and
# libzstd-dev let the test scripts link the system's zstd rather than compile it
# (.cargo/config.toml); the rest of the toolchain (cargo, a C compiler) is assumed present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# dpkg-query rather than pkg-config: pkg-config itself may be the missing piece.
dpkg-query -W -f='${Status}' libzstd-dev 2>/dev/null | grep -q "ok installed" || need+=(libzstd-dev)
for extra in "$@"; do
  command -v "${extra%%:*}" >/dev/null 2>&1 || need+=("${extra#*:}")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
