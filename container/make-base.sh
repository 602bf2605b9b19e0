#!/bin/bash
# make-base.sh [TAG]: a Debian bookworm base image without a registry (root, debootstrap).
#
# The minbase root filesystem is made once by debootstrap (~30 s, ~200 MB) and kept in
# $FAKECFS_CI_CACHE (default /var/cache/fakecfs-ci), so later runs only `docker import` it
# (~2 s). Default TAG: local/bookworm-minbase.
set -euo pipefail
tag=${1:-local/bookworm-minbase}
cache=${FAKECFS_CI_CACHE:-/var/cache/fakecfs-ci}
docker=${DOCKER:-docker}
rootfs=$cache/bookworm-minbase
if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    exit 0
fi
if [ ! -e "$rootfs/etc/debian_version" ]; then
    command -v debootstrap >/dev/null || {
        echo "make-base.sh: installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    mkdir -p "$cache"
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian >/dev/null
    rm -rf "$rootfs.tmp/var/cache/apt/archives/"*.deb
    mv "$rootfs.tmp" "$rootfs"
fi
tar -C "$rootfs" -c . | "$docker" import - "$tag" >/dev/null
