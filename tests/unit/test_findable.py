"""The plan that makes image files findable by UUID, and the helper launcher's command line."""

from __future__ import annotations

import pytest

from fakecfs.findable import FINDABLE_MAJOR, FIRST_MINOR, Device, device_name, plan
from fakecfs.helperns import HELPER_ENV, helper_env, launcher_argv, parse

HOST = "major minor  #blocks  name\n\n 254        0   10485760 vda\n 254        1   10484719 vda1\n"


def test_plan_appends_one_line_per_image_and_keeps_the_hosts_lines() -> None:
    text, entries = plan(HOST, {"null", "vda", "vda1"},
                         [Device("/proc/self/fd/5", "/srv/shared.img", 256 << 20),
                          Device("/x/y", "/other/shared.img", 4096)])
    assert text.startswith(HOST)
    added = text[len(HOST):].splitlines()
    assert [line.split() for line in added] == [
        [str(FINDABLE_MAJOR), str(FIRST_MINOR), str(256 * 1024), "shared.img"],
        [str(FINDABLE_MAJOR), str(FIRST_MINOR + 1), "4", "shared.img-1"],
    ]
    assert [(e.name, e.source) for e in entries] == [("shared.img", "/proc/self/fd/5"),
                                                      ("shared.img-1", "/x/y")]


def test_plan_never_reuses_a_name_of_dev_or_of_the_partitions() -> None:
    _, entries = plan(HOST, {"null"}, [Device("s", "/a/vda", 1), Device("s", "/b/null", 1)])
    assert [e.name for e in entries] == ["vda-1", "null-1"]


@pytest.mark.parametrize(("label", "name"), [
    ("/srv/disk.img", "disk.img"), ("/srv/with space.img", "fakecfs"), ("/", "fakecfs"),
    ("/srv/../..", "fakecfs"),
])
def test_device_names_are_plain_words(label: str, name: str) -> None:
    assert device_name(label, set()) == name


def test_launcher_command_line_round_trips() -> None:
    argv = launcher_argv("/py", "/run/node1", 7, [("/srv/a.img", 9), ("/dev/loop0", 10)],
                         ["/sbin/ocfs2_hb_ctl", "-K", "-u", "ABC"])
    assert argv[:3] == ["/py", "-m", "fakecfs.helperns"]
    launch = parse(argv[3:])
    assert launch.sysroot == "/run/node1" and launch.status_fd == 7
    assert launch.devices == (("/srv/a.img", 9), ("/dev/loop0", 10))
    assert launch.argv == ("/sbin/ocfs2_hb_ctl", "-K", "-u", "ABC")


@pytest.mark.parametrize("bad", [[], ["/r", "7"], ["/r", "--", "x"], ["/r", "7", "--"],
                                 ["/r", "7", "--device", "a", "--", "x"]])
def test_launcher_refuses_a_malformed_command_line(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        parse(bad)


def test_the_helper_gets_the_kernels_environment_plus_only_the_shims() -> None:
    assert helper_env(None, None, "/r") == HELPER_ENV
    env = helper_env({"sys/kernel/config": "/sys/kernel/config"}, "/lib/shim.so", "/r")
    assert env == {**HELPER_ENV, "LD_PRELOAD": "/lib/shim.so",
                   "FAKECFS_CONFIGFS_PATHS": "/sys/kernel/config", "FAKECFS_SYSROOT": "/r"}
