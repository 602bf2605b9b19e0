"""Finding ocfs2 volumes on this machine, and loop devices for image files (shell).

Reading one device is `ocfs2fmt.blockdev` (shared with the emulated kernel).
`candidate_devices` lists what ``ocfs2_hb_ctl -u`` scans: block devices (pyudev, else
``/proc/partitions`` like the C tool), then the image files named by ``HBCTL_DEVICES``
for hosts without loop devices. `find_by_uuid` is the C tool's ``scan_devices``: the
first device whose volume has exactly that UUID.

The loop helpers talk to the kernel directly (``/dev/loop-control`` + ``LOOP_SET_FD`` +
``LOOP_SET_STATUS64``), no ``losetup`` needed; autoclear stays off so the device
outlives this process, as ``losetup -f --show`` leaves it.

pyudev is imported inside the functions that need it: ``ocfs2_hb_ctl -I -u`` never
touches devices and must start fast.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import time

from ocfs2fmt.blockdev import read_volume, read_volume_with_sector
from ocfs2fmt.ondisk import OnDiskError, Volume

ENV_DEVICES = "HBCTL_DEVICES"

# <linux/loop.h>
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CTL_GET_FREE = 0x4C82
LO_NAME_SIZE = 64
# struct loop_info64: 5 u64, 4 u32, file name, crypt name, key, 2 u64 = 232 bytes
_LOOP_INFO64 = struct.Struct("<QQQQQIIII64s64s32sQQ")

# Names never worth probing: RAM disks, compressed swap, optical drives.
_SKIP_PREFIXES = ("ram", "zram", "sr", "fd")


class DeviceError(Exception):
    """A device operation that failed; str() is one line saying what and why."""


# --- finding devices -------------------------------------------------------------


def candidate_devices() -> list[str]:
    """Every path `find_by_uuid` probes, in order, without duplicates."""
    found = _udev_block_devices()
    if not found:
        found = _proc_partitions()
    found += image_files()
    return list(dict.fromkeys(found))  # first occurrence wins, order kept


def _skip_name(name: str) -> bool:
    return name.startswith(_SKIP_PREFIXES)


def _udev_block_devices() -> list[str]:
    try:
        import pyudev

        context = pyudev.Context()
        out: list[str] = []
        for dev in context.list_devices(subsystem="block"):
            name = dev.sys_name
            if _skip_name(name) or dev.device_type not in ("disk", "partition"):
                continue
            attrs = dev.attributes
            if name.startswith("loop") and _attr(attrs, "loop/backing_file") is None:
                continue  # an unattached loop device: nothing to read
            if _attr(attrs, "size") == "0":
                continue
            out.append(dev.device_node or f"/dev/{name}")
        return out
    except Exception:  # pyudev missing or sysfs unreadable: /proc/partitions instead
        return []


def _attr(attrs: object, name: str) -> str | None:
    try:
        raw = attrs.get(name)  # type: ignore[attr-defined]
    except Exception:
        return None
    if raw is None:
        return None
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()


def _proc_partitions(path: str = "/proc/partitions") -> list[str]:
    """What the C tool scans: every ``/proc/partitions`` entry but major 0."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return []
    return parse_proc_partitions(lines)


def parse_proc_partitions(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit():
            continue  # the header, blank lines, lines with < 3 numbers + a name
        if int(fields[0]) == 0 or _skip_name(fields[3]):
            continue
        out.append("/dev/" + fields[3])
    return out


def image_files(env: str | None = None) -> list[str]:
    """Files named by ``HBCTL_DEVICES`` (a folder: its regular files, sorted)."""
    value = os.environ.get(ENV_DEVICES, "") if env is None else env
    out: list[str] = []
    for entry in value.split(":"):
        if not entry:
            continue
        if os.path.isdir(entry):
            with contextlib.suppress(OSError):
                for name in sorted(os.listdir(entry)):
                    full = os.path.join(entry, name)
                    if os.path.isfile(full):
                        out.append(full)
        elif os.path.exists(entry):
            out.append(entry)
    return out


def find_by_uuid(uuid: str) -> str | None:
    """The first candidate device whose volume's UUID is exactly ``uuid``.

    As in the C tool, a device counts only if its whole heartbeat descriptor can be
    read; unreadable or foreign devices are skipped silently.
    """
    # The cheap sources first (what the C tool scans, then HBCTL_DEVICES): the kernel's
    # put_super call of ocfs2_hb_ctl -K -u must not pay pyudev's ~20 ms start-up. pyudev's
    # enumeration is consulted only for what those two did not offer.
    tried: set[str] = set()
    for batch in (lambda: _proc_partitions() + image_files(), candidate_devices):
        for path in batch():
            if path in tried:
                continue
            tried.add(path)
            try:
                volume, _hb = read_volume_with_sector(path)
            except OnDiskError:
                continue
            if volume.uuid == uuid:
                return path
    return None


def list_volumes() -> list[tuple[str, Volume]]:
    """Every candidate device holding a readable ocfs2 volume."""
    out = []
    for path in candidate_devices():
        try:
            out.append((path, read_volume(path)))
        except OnDiskError:
            continue
    return out


# --- loop devices ----------------------------------------------------------------


def loop_attach(image: str) -> str:
    """Attach ``image`` read-write to a free loop device; returns e.g. ``/dev/loop3``."""
    try:
        img_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise DeviceError(f"{image}: cannot open for loop attach: {e.strerror}") from e
    try:
        for _attempt in range(8):
            dev = _free_loop()
            try:
                fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise DeviceError(f"{dev}: cannot open: {e.strerror}") from e
            try:
                try:
                    fcntl.ioctl(fd, LOOP_SET_FD, img_fd)
                except OSError as e:
                    if e.errno == errno.EBUSY:
                        continue  # someone took it between GET_FREE and SET_FD
                    raise DeviceError(f"{dev}: LOOP_SET_FD failed: {e.strerror}") from e
                name = os.path.abspath(image).encode()[: LO_NAME_SIZE - 1]
                info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, name, b"", b"", 0, 0)
                try:
                    fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
                except OSError as e:
                    with contextlib.suppress(OSError):
                        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
                    raise DeviceError(f"{dev}: LOOP_SET_STATUS64 failed: {e.strerror}") from e
                return dev
            finally:
                os.close(fd)
        raise DeviceError(f"{image}: no free loop device (all taken while attaching)")
    finally:
        os.close(img_fd)


def _free_loop() -> str:
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hint = " (needs root)" if e.errno in (errno.EACCES, errno.EPERM) else ""
        raise DeviceError(f"/dev/loop-control: cannot open: {e.strerror}{hint}") from e
    try:
        num = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    except OSError as e:
        raise DeviceError(f"/dev/loop-control: no free loop device: {e.strerror}") from e
    finally:
        os.close(ctl)
    return f"/dev/loop{num}"


def loop_detach(dev: str) -> None:
    """Detach a loop device (the kernel defers it while the device is still open)."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DeviceError(f"{dev}: cannot open: {e.strerror}") from e
    try:
        for _attempt in range(50):
            try:
                fcntl.ioctl(fd, LOOP_CLR_FD, 0)
                return
            except OSError as e:
                if e.errno == errno.EBUSY:
                    time.sleep(0.02)  # a prober (udev, a scan) holds it for a moment
                    continue
                if e.errno == errno.ENXIO:
                    raise DeviceError(f"{dev}: not attached") from e
                raise DeviceError(f"{dev}: LOOP_CLR_FD failed: {e.strerror}") from e
        raise DeviceError(f"{dev}: busy, cannot detach")
    finally:
        os.close(fd)


def loop_backing_file(dev: str) -> str | None:
    """The file behind loop device ``dev``, or None if it is not an attached loop."""
    name = os.path.basename(os.path.realpath(dev))
    if not name.startswith("loop"):
        return None
    try:
        import pyudev

        udev = pyudev.Devices.from_name(pyudev.Context(), "block", name)
        value = _attr(udev.attributes, "loop/backing_file")
    except Exception:
        value = None
    if value is None:
        try:
            with open(f"/sys/block/{name}/loop/backing_file", encoding="utf-8") as f:
                value = f.read().strip()
        except OSError:
            return None
    return value or None
