"""hbctl.devices on this machine: image files named by HBCTL_DEVICES, real loop devices
(attached with our own ioctls, and with losetup for 4K sectors), /proc/partitions.

Loop tests need root and a usable /dev/loop-control; they skip, saying why, otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbctl import devices
from hbctl.devices import DeviceError
from ocfs2fmt import blockdev
from ocfs2fmt.ondisk import HeartbeatDesc, OnDiskError

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.ocfs2") is None, reason="mkfs.ocfs2 (ocfs2-tools) is not installed"
)


def mkfs(path: Path, *options: str) -> Path:
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    subprocess.run(
        ["mkfs.ocfs2", "-q", "-F", "-J", "size=4M", "-N", "2", *options, str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two volumes in a folder (plus a non-volume and a subfolder), one outside it."""
    folder = tmp_path_factory.mktemp("devs")
    (folder / "0-garbage.bin").write_bytes(os.urandom(64 * 1024))
    (folder / "sub").mkdir()
    mkfs(folder / "sub" / "hidden.img", "-b", "4096")
    return {
        "folder": folder,
        "a": mkfs(folder / "a.img", "-b", "4096", "--cluster-stack=o2cb",
                  "--cluster-name=devtest"),
        "b": mkfs(folder / "b.img", "-b", "1024"),
        "lone": mkfs(tmp_path_factory.mktemp("lone") / "lone.img", "-b", "512"),
        "b512": mkfs(tmp_path_factory.mktemp("b512") / "b512.img", "-b", "512", "-C", "4096"),
    }


def uuid_of(path: Path) -> str:
    return blockdev.read_volume(str(path)).uuid


# --- reading ---------------------------------------------------------------------


def test_read_volume_with_sector_on_a_file(images: dict[str, Path]) -> None:
    vol, hb = blockdev.read_volume_with_sector(str(images["a"]))
    assert vol.device == str(images["a"]) and vol.cluster_name == "devtest"
    assert hb == HeartbeatDesc(512, vol.hb_blkno * 8, 255)
    assert blockdev.sector_size(str(images["a"])) == 512


def test_read_volume_errors_are_one_line(tmp_path: Path, images: dict[str, Path]) -> None:
    with pytest.raises(OnDiskError) as info:
        blockdev.read_volume(str(tmp_path / "missing"))
    assert info.value.code == "NAMED_DEVICE_NOT_FOUND"
    assert str(info.value).startswith(f"{tmp_path / 'missing'}: cannot open")
    with pytest.raises(OnDiskError) as info:
        blockdev.read_volume(str(images["folder"] / "0-garbage.bin"))
    assert "\n" not in str(info.value) and info.value.code in ("BAD_MAGIC", "OCFS_REV")
    assert blockdev.sector_size(str(tmp_path / "missing")) == 512


# --- HBCTL_DEVICES ---------------------------------------------------------------


def test_image_files_folder_and_file(images: dict[str, Path], tmp_path: Path) -> None:
    folder = images["folder"]
    env = f"{folder}:{tmp_path / 'nope'}:{images['lone']}"
    assert devices.image_files(env) == [
        str(folder / "0-garbage.bin"), str(folder / "a.img"), str(folder / "b.img"),
        str(images["lone"]),
    ]
    assert devices.image_files("") == []


def test_find_by_uuid_through_hbctl_devices(
    images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HBCTL_DEVICES", f"{images['folder']}:{images['lone']}")
    cands = devices.candidate_devices()
    assert cands[-4:] == devices.image_files()
    for key in ("a", "b", "lone"):
        assert devices.find_by_uuid(uuid_of(images[key])) == str(images[key])
    # exact match only, like the C tool's strcmp
    assert devices.find_by_uuid(uuid_of(images["a"]).lower()) is None
    assert devices.find_by_uuid(uuid_of(images["a"])[:31]) is None
    # not in the folder's top level, not named: not found
    assert devices.find_by_uuid(uuid_of(images["folder"] / "sub" / "hidden.img")) is None
    listed = dict(devices.list_volumes())
    assert {str(images[k]) for k in ("a", "b", "lone")} <= set(listed)
    assert listed[str(images["b"])].block_size == 1024


def test_find_by_uuid_without_hbctl_devices(
    images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HBCTL_DEVICES", raising=False)
    assert devices.find_by_uuid(uuid_of(images["a"])) is None  # a file nobody named


def test_proc_partitions_parsing() -> None:
    text = """major minor  #blocks  name

 254        0  268435456 vda
 254        1     524288 vda1
   0        0          0 weird0
  11        0    1048575 sr0
   7        3      65536 loop3
   8
"""
    assert devices.parse_proc_partitions(text.splitlines(True)) == [
        "/dev/vda", "/dev/vda1", "/dev/loop3"]


# --- loop devices ----------------------------------------------------------------


def _loop_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control"
    return None


@pytest.fixture
def attached(images: dict[str, Path]) -> Iterator[str]:
    why = _loop_unavailable()
    if why:
        pytest.skip(why)
    try:
        dev = devices.loop_attach(str(images["a"]))
    except DeviceError as e:
        pytest.skip(f"loop devices unusable here: {e}")
    try:
        yield dev
    finally:
        if devices.loop_backing_file(dev) is not None:
            devices.loop_detach(dev)


def test_loop_attach_find_detach(
    attached: str, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HBCTL_DEVICES", raising=False)
    dev = attached
    assert devices.loop_backing_file(dev) == os.path.realpath(images["a"])
    assert dev in devices.candidate_devices()
    uuid = uuid_of(images["a"])
    assert devices.find_by_uuid(uuid) == dev
    assert blockdev.sector_size(dev) == 512
    vol, hb = blockdev.read_volume_with_sector(dev)
    assert vol.uuid == uuid and hb == HeartbeatDesc(512, vol.hb_blkno * 8, 255)
    # losetup sees the name we set with LOOP_SET_STATUS64, and no autoclear
    if shutil.which("losetup"):
        out = subprocess.run(["losetup", "-O", "AUTOCLEAR,BACK-FILE", "-n", dev],
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == ["0", os.path.realpath(images["a"])]

    devices.loop_detach(dev)
    assert devices.loop_backing_file(dev) is None
    assert dev not in devices.candidate_devices()
    assert devices.find_by_uuid(uuid) is None
    with pytest.raises(DeviceError) as info:
        devices.loop_detach(dev)
    assert str(info.value) == f"{dev}: not attached"


def test_loop_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        devices.loop_attach(str(tmp_path / "missing.img"))
    assert str(info.value).startswith(f"{tmp_path / 'missing.img'}: cannot open")
    assert devices.loop_backing_file("/dev/null") is None
    assert devices.loop_backing_file(str(tmp_path / "loop9")) is None


def test_loop_attach_as_ordinary_user_says_root(images: dict[str, Path]) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to drop to nobody) and setpriv")
    code = (
        "from hbctl import devices\n"
        "try:\n    devices.loop_attach('/dev/null')\n"
        "except devices.DeviceError as e:\n    print(e)\n"
    )
    # /dev/null opens read-write for anyone, so the failure is at /dev/loop-control
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", code],
        capture_output=True, text=True, cwd=Path(devices.__file__).parents[1],
    )
    if "ModuleNotFoundError" in out.stderr or "Permission denied" in out.stderr:
        pytest.skip(f"nobody cannot import the project here: {out.stderr.strip()[-80:]}")
    assert out.stdout.strip() == "/dev/loop-control: cannot open: Permission denied (needs root)"


@pytest.mark.parametrize(("key", "ok"), [("a", True), ("b512", False)])
def test_4k_sector_loop_device(images: dict[str, Path], key: str, ok: bool) -> None:
    """Spec §5.4: on 4K sectors a 4K-block volume heartbeats in 4K slots, and a
    512-byte-block volume is "Bad magic number" (O_DIRECT cannot read its superblock)."""
    why = _loop_unavailable() or (None if shutil.which("losetup") else "no losetup")
    if why:
        pytest.skip(why)
    try:
        dev = subprocess.run(["losetup", "-f", "--show", "-b", "4096", str(images[key])],
                             capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"losetup -b 4096 failed: {e.stderr.strip()}")
    try:
        assert blockdev.sector_size(dev) == 4096
        if ok:
            vol, hb = blockdev.read_volume_with_sector(dev)
            assert hb == HeartbeatDesc(4096, vol.hb_blkno, 255)
        else:
            with pytest.raises(OnDiskError) as info:
                blockdev.read_volume_with_sector(dev)
            assert info.value.code == "BAD_MAGIC"
            assert info.value.com_err == "Bad magic number in superblock"
    finally:
        devices.loop_detach(dev)
