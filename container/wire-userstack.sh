#!/bin/bash
# wire-userstack.sh [--netns NAME] CONTAINER...   (root)
# wire-userstack.sh [--netns NAME] --remove
#
# The network of the user-stack profile: corosync needs one, and the containers run with
# `--network none`. This makes a network namespace NAME (default ocfs2-userstack) holding a
# bridge, and gives the Nth CONTAINER an eth0 on it with the address 10.213.0.N/24, as
# container/corosync.conf expects; the host's own network is never touched. A container that
# stops takes its end of the link with it (start it again, then wire it again); --remove
# deletes the namespace and the bridge. Environment: DOCKER (default docker).
set -euo pipefail
docker=${DOCKER:-docker}
ns=ocfs2-userstack
if [ "${1:-}" = --netns ]; then ns=$2; shift 2; fi
if [ "${1:-}" = --remove ]; then
    ip netns delete "$ns" 2>/dev/null || true
    exit 0
fi
if [ $# -eq 0 ]; then
    echo "usage: $0 [--netns NAME] CONTAINER... | [--netns NAME] --remove" >&2
    exit 2
fi
if [ ! -e "/run/netns/$ns" ]; then
    ip netns add "$ns"
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" link set br0 up
fi
n=0
for c in "$@"; do
    n=$((n + 1))
    pid=$("$docker" inspect -f '{{.State.Pid}}' "$c")
    if [ "$pid" = 0 ]; then
        echo "$0: container $c is not running" >&2
        exit 1
    fi
    ip -n "$ns" link delete "p$n" 2>/dev/null || true  # a restarted container's old link
    nsenter --net="/proc/$pid/ns/net" ip link add eth0 type veth peer name "p$n" netns "$ns"
    ip -n "$ns" link set "p$n" master br0 up
    nsenter --net="/proc/$pid/ns/net" ip addr add "10.213.0.$n/24" dev eth0
    nsenter --net="/proc/$pid/ns/net" ip link set eth0 up
done
