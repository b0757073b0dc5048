# Shared helpers for the ci/ scripts. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

VEIL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Slow, reusable things (tools tree, package cache, Kubernetes downloads) live outside
# the clone so a fresh clone reuses them; an empty cache still works, only slower.
VEIL_CACHE=${VEIL_CACHE:-/var/cache/veil}
VEIL_BUILD=${VEIL_BUILD:-$VEIL_ROOT/build}
# The local TPM CA: certifies every QEMU node's EK, and the image trusts it. Exported,
# so a second build elsewhere (ci/check-reproducible) bakes in the same one.
VEIL_TPM_CA=${VEIL_TPM_CA:-$VEIL_BUILD/tpm-ca}
export VEIL_ROOT VEIL_CACHE VEIL_BUILD VEIL_TPM_CA

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

need_cmd() {
    local cmd=$1 hint=$2
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is missing: $hint"
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages / runs debootstrap): re-run with sudo"
}

# The trixie tools tree made by ci/setup-tools-tree. Its path carries a hash of its
# package list, so changing the list makes a new tree instead of mutating the old one.
tools_tree_dir() {
    local hash
    hash=$(sha256sum "$VEIL_ROOT/ci/tools-tree.packages" | cut -c1-12)
    echo "$VEIL_CACHE/tools-trixie-$hash"
}
