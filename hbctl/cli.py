"""``hbctl``: OCFS2 o2cb heartbeat control for real kernels and fakecfs sysroots.

Every command talks to the kernel surfaces under ``--sysroot`` / ``HBCTL_SYSROOT`` (a
fakecfs mount), or to the real host when neither is given. Human output is a table;
``--json`` gives the same facts for automation. Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from typing import Any

from .sysroot import Sysroot, from_env

PROG = "hbctl"
SERVICE = "hbctl"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


DEFAULT_SERVICE = "hbctl"  # a tool's own service on user stacks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Control OCFS2 o2cb disk heartbeat: register a cluster, start and stop "
        "heartbeat regions with libo2cb's reference counting, inspect volumes and nodes.",
        epilog="Against an emulated kernel: HBCTL_SYSROOT=MOUNTPOINT (a fakecfs mount). "
        "Image files are found by UUID when listed in HBCTL_DEVICES=PATH[:PATH...].",
    )
    p.add_argument("--sysroot", metavar="DIR",
                   help="root of the kernel surfaces (default: $HBCTL_SYSROOT or /)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def target(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group(required=True)
        g.add_argument("-d", "--device", help="the ocfs2 device or image file")
        g.add_argument("-u", "--uuid", help="the volume UUID (32 upper-case hex digits)")

    def service(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--service", default=DEFAULT_SERVICE, metavar="NAME",
                        help="user stacks (pcmk, cman): the service registered with "
                        f"ocfs2_controld (default {DEFAULT_SERVICE}; 'ocfs2' is the mounts' "
                        "own); ignored on o2cb")

    s = sub.add_parser("start", help="start heartbeat on a volume (takes one reference)",
                       description="Start heartbeat on a volume, or take one more reference "
                       "if it runs, exactly as 'ocfs2_hb_ctl -S' does (persistent reference). "
                       "On a user stack (pcmk, cman): register --service with "
                       "ocfs2_controld (MOUNT + MRESULT), as 'ocfs2_hb_ctl -S ... SERVICE'.")
    target(s)
    service(s)
    s = sub.add_parser("stop", help="drop one reference; heartbeat stops at zero",
                       description="Drop one persistent reference, as 'ocfs2_hb_ctl -K'; the "
                       "last one removes the region and its semaphore set. On a user stack: "
                       "remove --service from ocfs2_controld (UNMOUNT); the last service "
                       "leaves the volume's group.")
    target(s)
    service(s)
    s = sub.add_parser("refs", help="print a region's reference count ('UUID: N refs')")
    target(s)
    s = sub.add_parser("status", help="regions, refs and live nodes of the running cluster")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("info", help="what is on an ocfs2 volume (UUID, stack, heartbeat area)")
    s.add_argument("device", metavar="DEVICE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("devices", help="every ocfs2 volume found (block devices, HBCTL_DEVICES)")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser(
        "doctor", help="find leaked references, orphaned regions and semaphores (--fix: repair)",
        description="Check this node's heartbeat state for what operators otherwise fix by "
        "hand with ipcs/ipcrm: references no mount or tool holds, regions with no reference "
        "or no semaphore set, semaphore sets without a region, a mounted flag that outlived "
        "its mounts, a region whose device is gone, a cluster with no local node. Each "
        "finding is explained in one sentence. Exit status 0 when nothing is (left) wrong, "
        "1 otherwise.",
        epilog="--fix never touches a mounted region's share of references, and touches no "
        "region while an ocfs2 tool (mount.ocfs2, fsck, tunefs, ocfs2_hb_ctl, o2cb, hbctl) "
        "runs in this node or holds the region's mutex. A reference taken on purpose with "
        "'ocfs2_hb_ctl -S' and no mount counts as leaked: do not --fix while you rely on one.")
    d.add_argument("--fix", action="store_true",
                   help="repair what can be repaired safely now (under each region's mutex)")
    d.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("cluster", help="register, unregister or show the cluster")
    csub = c.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    r = csub.add_parser("register", help="create the cluster and its nodes from cluster.conf",
                        description="Do what 'o2cb register-cluster' does: mkdir the cluster, "
                        "set the heartbeat mode, add every node (port, address, num, local); the "
                        "node named like this host (or --node) is local.")
    r.add_argument("cluster", metavar="CLUSTER")
    r.add_argument("--config", default="/etc/ocfs2/cluster.conf", metavar="FILE",
                   help="cluster.conf to read (default: %(default)s)")
    r.add_argument("--node", metavar="NAME", help="the local node's name (default: hostname)")
    r.add_argument("--dead-threshold", type=int, metavar="N",
                   help="heartbeat dead threshold (O2CB_HEARTBEAT_THRESHOLD)")
    r.add_argument("--idle-timeout-ms", type=int, metavar="MS")
    r.add_argument("--keepalive-delay-ms", type=int, metavar="MS")
    r.add_argument("--reconnect-delay-ms", type=int, metavar="MS")
    u = csub.add_parser("unregister", help="remove the cluster (refused while regions run)")
    u.add_argument("cluster", metavar="CLUSTER")
    sh = csub.add_parser("show", help="the registered cluster, nodes and regions")
    sh.add_argument("--json", action="store_true", help="machine-readable output")

    m = sub.add_parser("mount", help="mount an ocfs2 volume as mount.ocfs2 does (flagged ref)",
                       description="Mount DEVICE on DIR as mount.ocfs2 does: check the volume "
                       "and the cluster, join heartbeat (the first mount of a device takes one "
                       "reference and sets the mounted flag; later mounts take none), then "
                       "mount(2). On a user stack (pcmk, cman) the mount joins the volume's "
                       "group through ocfs2_controld (service 'ocfs2', one for all mounts). "
                       "Against fakecfs the mount is emulated and DIR is a virtual "
                       "name; on a real host mount(8) is run. --bind/--rbind: SRC DST. "
                       "-o remount[,ro|rw]: change a mount's options (no reference).")
    m.add_argument("source", metavar="DEVICE|SRC")
    m.add_argument("target", metavar="DIR|DST")
    kind = m.add_mutually_exclusive_group()
    kind.add_argument("--bind", action="store_true", help="bind-mount SRC on DST")
    kind.add_argument("--rbind", action="store_true",
                      help="bind-mount SRC and every mount below it on DST")
    m.add_argument("-o", "--options", default="", metavar="OPTS",
                   help="extra mount options, comma-separated")
    um = sub.add_parser("umount", help="unmount DIR (the last mount of a device stops "
                        "heartbeat through the kernel's ocfs2_hb_ctl -K)")
    um.add_argument("dir", metavar="DIR")

    ev = sub.add_parser("events", help="the kernel's heartbeat events (fakecfs: "
                        "fakecfs/events; a host: /dev/kmsg)",
                        description="Print the cluster stack's kernel events: nodes up and "
                        "down, regions started, aborted and stopped, write timeouts, fencing, "
                        "bad CRCs, slot conflicts, I/O errors, faults injected. On a fakecfs "
                        "sysroot they come from SYSROOT/fakecfs/events; on a real host from "
                        "the o2hb/o2net/ocfs2 lines of /dev/kmsg (root), in the same shape.")
    ev.add_argument("--follow", "-f", action="store_true",
                    help="keep printing new events until interrupted")
    ev.add_argument("--json", action="store_true",
                    help="one JSON object per line (seq, t, kind, level, message, region, "
                    "node, dev)")
    ev.add_argument("--kind", action="append", metavar="KIND",
                    help="only events of this kind (repeatable), e.g. node_down, fenced")

    lp = sub.add_parser("loop", help="attach or detach loop devices (root)")
    lsub = lp.add_subparsers(dest="loop_command", required=True, metavar="ACTION")
    la = lsub.add_parser("attach", help="attach IMAGE to a free loop device and print it")
    la.add_argument("image", metavar="IMAGE")
    ld = lsub.add_parser("detach", help="detach a loop device")
    ld.add_argument("device", metavar="DEV")
    return p


# -- helpers ----------------------------------------------------------------------------


def _o2cb_stack(sysroot: Sysroot) -> str:
    from .errors import O2cbError
    from .stack import o2cb_init

    try:
        return o2cb_init(sysroot)
    except O2cbError as e:
        if sysroot.emulated:
            hint = f"is a fakecfs mount at {sysroot.root}? (fakecfs mount {sysroot.root})"
        else:
            hint = ("are configfs and the o2cb modules there? (modprobe ocfs2_nodemanager; "
                    "mount -t configfs none /sys/kernel/config)")
        raise CliError(f"cannot initialize cluster: {e.message}; {hint}") from e


def _volume(device: str) -> tuple[Any, Any]:
    from ocfs2fmt.blockdev import read_volume_with_sector
    from ocfs2fmt.ondisk import OnDiskError

    try:
        return read_volume_with_sector(device)
    except OnDiskError as e:
        raise CliError(str(e)) from e


def _resolve(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(device, volume, desc) for -d, or the device found for -u."""
    if args.device:
        volume, desc = _volume(args.device)
        return args.device, volume, desc
    from .devices import find_by_uuid

    device = find_by_uuid(args.uuid)
    if device is None:
        raise CliError(f"no ocfs2 volume with UUID {args.uuid} among the block devices "
                       "and HBCTL_DEVICES")
    volume, desc = _volume(device)
    return device, volume, desc


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        sys.stdout.write(text)


# -- commands ---------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .errors import O2cbError
    from .regions import begin_group_join, region_refs, user_start

    stack = _o2cb_stack(sysroot)
    device, volume, desc = _resolve(args)
    if stack != "o2cb":
        try:
            user_start(sysroot, stack, volume, volume.uuid, device, args.service)
        except O2cbError as e:
            raise CliError(f"{volume.uuid}: cannot register service {args.service!r} with "
                           f"ocfs2_controld ({stack}): {e.message}"
                           + (f" ({e.detail})" if e.detail else "")) from e
        print(f"{volume.uuid}: service {args.service} registered with ocfs2_controld "
              f"({stack})")
        return
    try:
        begin_group_join(sysroot, stack, volume, volume.uuid, device, desc, persist=True)
    except O2cbError as e:
        raise CliError(f"{volume.uuid}: cannot start heartbeat on {device}: {e.message}") from e
    print(f"{volume.uuid}: heartbeat running on {device}, {region_refs(volume.uuid)} refs")


def cmd_stop(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .errors import O2cbError
    from .regions import group_leave
    from .semaphores import peek_refs

    stack = _o2cb_stack(sysroot)
    _device, volume, _desc = _resolve(args)
    if stack != "o2cb":
        from .regions import user_stop

        try:
            user_stop(sysroot, stack, volume, volume.uuid, args.service)
        except O2cbError as e:
            raise CliError(f"{volume.uuid}: cannot remove service {args.service!r} from "
                           f"ocfs2_controld ({stack}): {e.message}"
                           + (f" ({e.detail})" if e.detail else "")) from e
        print(f"{volume.uuid}: service {args.service} removed from ocfs2_controld ({stack})")
        return
    try:
        group_leave(sysroot, stack, volume, volume.uuid, persist=True)
    except O2cbError as e:
        raise CliError(f"{volume.uuid}: cannot stop heartbeat: {e.message}") from e
    left = peek_refs(volume.uuid)
    state = "stopped" if not left else f"still running, {left} refs"
    print(f"{volume.uuid}: heartbeat {state}")


def cmd_refs(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .regions import region_refs

    uuid = args.uuid or _volume(args.device)[0].uuid
    print(f"{uuid}: {region_refs(uuid)} refs")


def _livenodes(sysroot: Sysroot, region: str) -> list[int] | None:
    try:
        with open(os.path.join(sysroot.debugfs_o2hb, region, "livenodes"),
                  encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None


def status_data(sysroot: Sysroot) -> dict[str, Any]:
    """What ``hbctl status`` reports, as plain data (also the --json output)."""
    from .cluster import show
    from .mounting import list_mounts
    from .semaphores import peek_mounted_flag

    mounts = [{"device": m.device, "dir": m.dir, "options": m.options,
               "superblock": m.superblock, "uuid": m.uuid} for m in list_mounts(sysroot)]
    clusters = []
    for c in show(sysroot):
        names = {int(n["num"]): name for name, n in c["nodes"].items() if n.get("num")}
        local = next((name for name, n in c["nodes"].items() if n.get("local") == "1"), None)
        regions = []
        for uuid, r in c["regions"].items():
            live = _livenodes(sysroot, uuid)
            regions.append({
                "uuid": uuid,
                "device": r.get("dev") or None,
                "refs": r.get("refs"),
                # the mounted flag: the mounts of this device hold one reference together
                "mounted": peek_mounted_flag(uuid),
                "mounts": [m["dir"] for m in mounts if m["uuid"] == uuid],
                "pid": int(r["pid"]) if r.get("pid") else None,
                "live_nodes": None if live is None else [
                    {"num": n, "name": names.get(n)} for n in live
                ],
            })
        clusters.append({
            "cluster": c["cluster"],
            "mode": c["mode"],
            "dead_threshold": int(c["dead_threshold"]) if c["dead_threshold"] else None,
            "local_node": local,
            "nodes": [{"name": name, "num": int(n["num"]) if n.get("num") else None,
                       "ipv4_address": n.get("ipv4_address"),
                       "ipv4_port": int(n["ipv4_port"]) if n.get("ipv4_port") else None,
                       "local": n.get("local") == "1"}
                      for name, n in sorted(c["nodes"].items(),
                                            key=lambda kv: int(kv[1].get("num") or 0))],
            "regions": regions,
        })
    return {"sysroot": sysroot.root, "clusters": clusters, "mounts": mounts}


def cmd_status(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .table import render

    stack = _o2cb_stack(sysroot)
    data = status_data(sysroot)
    data["stack"] = stack
    out = []
    if stack != "o2cb":
        out.append(f"cluster stack {stack}: heartbeat and membership are the cluster stack's; "
                   "services are registered with ocfs2_controld "
                   "(debugfs.ocfs2 -R \"controld dump\" shows them)\n")
    elif not data["clusters"]:
        out.append("no cluster registered (hbctl cluster register CLUSTER)\n")
    for c in data["clusters"]:
        out.append(f"cluster {c['cluster']}: heartbeat mode {c['mode']}, dead threshold "
                   f"{c['dead_threshold']}, local node {c['local_node'] or '-'}\n")
        rows = []
        for r in c["regions"]:
            live = r["live_nodes"]
            live_text = "-" if live is None else (
                " ".join(f"{n['num']}({n['name'] or '?'})" for n in live) or "none")
            rows.append([r["uuid"], r["device"], r["refs"], "yes" if r["mounted"] else "no",
                         " ".join(r["mounts"]) or "-", live_text])
        if rows:
            out.append(render(["REGION", "DEVICE", "REFS", "MOUNTED", "MOUNTS", "LIVE NODES"],
                              rows))
        else:
            out.append("no heartbeat regions\n")
    if data["mounts"]:
        out.append(render(["MOUNT", "DEVICE", "UUID", "SUPERBLOCK", "OPTIONS"],
                          [[m["dir"], m["device"], m["uuid"], m["superblock"] or "-",
                            m["options"]] for m in data["mounts"]]))
    _emit(args, data, "".join(out))


def cmd_info(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .table import render

    volume, desc = _volume(args.device)
    data = volume.to_json(desc.block_bytes)
    data["device"] = args.device
    rows = [[k, data[k]] for k in ("device", "uuid", "label", "block_size", "cluster_size",
                                   "stack", "cluster_name", "local", "global_heartbeat")]
    hb = data["heartbeat"]
    rows.append(["heartbeat", f"block_bytes={hb['block_bytes']} "
                 f"start_block={hb['start_block']} blocks={hb['blocks']}"])
    _emit(args, data, render(["FIELD", "VALUE"], rows))


def cmd_devices(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .devices import list_volumes
    from .table import render

    found = []
    for path, volume in list_volumes():
        found.append({"device": path, "uuid": volume.uuid, "label": volume.label,
                      "stack": volume.stack, "cluster_name": volume.cluster_name,
                      "local": volume.local})
    text = render(["DEVICE", "UUID", "LABEL", "STACK", "CLUSTER"],
                  [[v["device"], v["uuid"], v["label"], v["stack"], v["cluster_name"]]
                   for v in found]) if found else "no ocfs2 volumes found\n"
    _emit(args, found, text)


def cmd_cluster(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from . import cluster as cl
    from .errors import O2cbError
    from .table import render

    if args.cluster_command == "show":
        data = cl.show(sysroot)
        out = []
        for c in data:
            out.append(f"cluster {c['cluster']} (heartbeat mode {c['mode']})\n")
            out.append(render(["NODE", "NUM", "ADDRESS", "PORT", "LOCAL"],
                              [[n, a["num"], a["ipv4_address"], a["ipv4_port"], a["local"]]
                               for n, a in c["nodes"].items()]))
        _emit(args, data, "".join(out) or "no cluster registered\n")
        return
    stack = _o2cb_stack(sysroot)
    if stack != "o2cb":
        raise CliError(f"this tool supports the 'o2cb' stack, but the '{stack}' stack is in use")
    try:
        if args.cluster_command == "register":
            try:
                config = cl.load(args.config)
            except (OSError, cl.ConfigError) as e:
                raise CliError(str(e)) from e
            timeouts = cl.Timeouts(args.dead_threshold, args.idle_timeout_ms,
                                   args.keepalive_delay_ms, args.reconnect_delay_ms)
            added = cl.register(sysroot, config, args.cluster, args.node, timeouts)
            print(f"Cluster '{args.cluster}' registered"
                  + (f" (nodes added: {', '.join(added)})" if added else ""))
        else:
            cl.unregister(sysroot, args.cluster)
            print(f"Cluster '{args.cluster}' unregistered")
    except O2cbError as e:
        raise CliError(f"cluster {args.cluster}: {e.message}"
                       + (f" ({e.detail})" if e.detail else "")) from e


def cmd_mount(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from . import mounting
    from .semaphores import peek_refs

    try:
        if args.bind or args.rbind:
            if args.options:
                raise CliError("--options does not go with --bind/--rbind")
            mounting.bind(sysroot, args.source, args.target, recursive=args.rbind)
            print(f"{os.path.abspath(args.source)} bound on {os.path.abspath(args.target)}"
                  + (" (recursively)" if args.rbind else ""))
            return
        options = [o for o in args.options.split(",") if o]
        done = mounting.mount(sysroot, args.source, args.target, options)
    except mounting.MountError as e:
        raise CliError(str(e)) from e
    if done.remount:
        rest = [o for o in options if o != "remount"]
        print(f"{done.uuid}: remounted {os.path.abspath(args.target)} "
              f"({','.join(rest) or 'rw'}, no new reference)")
        return
    if done.user_stack:
        hb = f"cluster_stack={done.user_stack}, service ocfs2 joined through ocfs2_controld"
    elif done.heartbeat == "local":
        ref = "took the mount reference" if done.took_ref else "already mounted: no new reference"
        hb = f"heartbeat=local, {ref}, {peek_refs(done.uuid) or 0} refs"
    else:
        hb = f"heartbeat={done.heartbeat}"
    print(f"{done.uuid}: mounted {os.path.abspath(args.source)} on "
          f"{os.path.abspath(args.target)} ({hb})")


def cmd_umount(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from . import mounting

    try:
        mounting.umount(sysroot, args.dir)
    except mounting.MountError as e:
        raise CliError(str(e)) from e
    print(f"{os.path.abspath(args.dir)} unmounted")


def cmd_loop(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .devices import DeviceError, loop_attach, loop_detach

    try:
        if args.loop_command == "attach":
            print(loop_attach(args.image))
        else:
            loop_detach(args.device)
    except DeviceError as e:
        raise CliError(str(e)) from e


def cmd_doctor(args: argparse.Namespace, sysroot: Sysroot) -> int:
    from .doctor import diagnose
    from .doctor_shell import apply, gather
    from .errors import O2cbError

    _o2cb_stack(sysroot)
    findings = diagnose(gather(sysroot))
    items = []
    for f in findings:
        item: dict[str, Any] = {**f.to_json(), "result": None}
        if args.fix and f.action is not None and f.blocked is None:
            try:
                item["result"] = apply(sysroot, f.action)
            except (O2cbError, OSError) as e:
                item["result"] = f"failed: {getattr(e, 'message', None) or e}"
        items.append(item)
    left = [i for i in items if i["result"] not in ("done", "no longer needed")]
    data = {"sysroot": sysroot.root, "fix": args.fix, "healthy": not left, "findings": items}
    out = []
    for i in items:
        out.append(f"{i['kind']} {i['subject']}: {i['message']}\n")
        if i["result"] is not None:
            out.append(f"  fix: {i['fix']}: {i['result']}\n")
        elif i["fix"] and i["blocked"]:
            out.append(f"  fix: {i['fix']}: not now: {i['blocked']}\n")
        elif i["fix"]:
            out.append(f"  fix (with --fix): {i['fix']}\n")
        elif i["blocked"]:
            out.append(f"  no automatic fix: {i['blocked']}\n")
    if not items:
        out.append("no problems found\n")
    elif left:
        out.append(f"{len(left)} problem(s) left\n")
    else:
        out.append("all problems fixed\n")
    _emit(args, data, "".join(out))
    return 0 if not left else 1


def cmd_events(args: argparse.Namespace, sysroot: Sysroot) -> None:
    from .events import KMSG, format_event, read_fakecfs, read_kmsg

    if sysroot.emulated:
        if not os.path.exists(sysroot.path("fakecfs/events")):
            raise CliError(f"{sysroot.root}: no fakecfs/events (not a fakecfs mount, or an "
                           "older fakecfs)")
        stream = read_fakecfs(sysroot.root, args.follow)
    else:
        try:
            stream = read_kmsg(args.follow)
            first = next(stream, None)
        except PermissionError as e:
            raise CliError(f"{KMSG}: {e.strerror} (reading the kernel log needs root)") from e
        # The first read is the one that can fail; the rest of the stream follows it.
        stream = itertools.chain([first] if first is not None else [], stream)
    try:
        for event in stream:
            if args.kind and event.get("kind") not in args.kind:
                continue
            print(json.dumps(event) if args.json else format_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()


COMMANDS = {
    "start": cmd_start, "stop": cmd_stop, "refs": cmd_refs, "status": cmd_status,
    "info": cmd_info, "devices": cmd_devices, "cluster": cmd_cluster, "loop": cmd_loop,
    "mount": cmd_mount, "umount": cmd_umount, "doctor": cmd_doctor, "events": cmd_events,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sysroot = from_env(args.sysroot)
    try:
        rc = COMMANDS[args.command](args, sysroot)
    except CliError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: {e.filename or ''}: {e.strerror}".replace(": : ", ": "), file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
