#!/bin/bash
# build.sh [--base IMAGE] [--tag TAG] [--wheelhouse DIR]: build the node image.
#
# Stages a small build context (the Dockerfile, the entrypoint, the statfs shim's source and
# a wheelhouse of the project and its dependencies built here with `pip wheel`), so the
# image build needs no network for Python packages, only Debian's apt repository.
#   --base IMAGE       debian:bookworm (default) or a local base from make-base.sh
#   --tag TAG          default fakecfs-node:latest
#   --wheelhouse DIR   reuse wheels already built there (default: build them now)
# Environment: PYTHON (default: the project's .venv/bin/python, else python3), DOCKER.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
base=debian:bookworm tag=fakecfs-node:latest wheelhouse=
while [ $# -gt 0 ]; do
    case $1 in
        --base) base=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        *) echo "usage: $0 [--base IMAGE] [--tag TAG] [--wheelhouse DIR]" >&2; exit 2 ;;
    esac
done
docker=${DOCKER:-docker}
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=python3; fi
fi
ctx=$(mktemp -d "${TMPDIR:-/tmp}/fakecfs-node-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$here/entrypoint.py" "$here/node-exec" "$ctx/"
cp "$root/fakecfs/preload/fakecfs_preload.c" "$ctx/"
if [ -n "$wheelhouse" ]; then
    cp -r "$wheelhouse" "$ctx/wheelhouse"
else
    # The wheels must suit the image's Python (bookworm: CPython 3.11, glibc 2.36).
    "$python" -m pip wheel -q -w "$ctx/wheelhouse" "$root"
fi
"$docker" build -q --network host --build-arg "BASE=$base" -t "$tag" "$ctx"
