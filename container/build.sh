#!/bin/bash
# build.sh [--base IMAGE] [--tag TAG] [--deb FILE]: build the node image.
#
# Stages a small build context (the Dockerfile, the entrypoint, node-exec and the project's
# Debian package) and builds the image, which installs that package with apt on Debian's
# own Python packages: the build needs Debian's apt repository and nothing else.
#   --base IMAGE   debian:bookworm (default) or a local base from make-base.sh
#   --tag TAG      default fakecfs-node:latest
#   --deb FILE     the fakecfs-hbctl .deb to install (default: build it now with `make deb`,
#                  which needs root on a Debian 12 host: the package must suit bookworm)
# Environment: DOCKER (the docker client).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
base=debian:bookworm tag=fakecfs-node:latest deb=
while [ $# -gt 0 ]; do
    case $1 in
        --base) base=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --deb) deb=$2; shift 2 ;;
        *) echo "usage: $0 [--base IMAGE] [--tag TAG] [--deb FILE]" >&2; exit 2 ;;
    esac
done
docker=${DOCKER:-docker}
if [ -z "$deb" ]; then
    make -s -C "$root" deb >&2
    deb=$(ls "$root"/dist/deb/fakecfs-hbctl_*.deb | head -n 1)
fi
if [ ! -f "$deb" ]; then
    echo "$0: $deb: no such package (make deb builds one)" >&2
    exit 1
fi
ctx=$(mktemp -d "${TMPDIR:-/tmp}/fakecfs-node-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$here/entrypoint.py" "$here/node-exec" "$ctx/"
cp "$deb" "$ctx/fakecfs-hbctl.deb"
"$docker" build -q --network host --build-arg "BASE=$base" -t "$tag" "$ctx"
