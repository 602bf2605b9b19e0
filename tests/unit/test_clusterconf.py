"""cluster.conf: the parser on good and bad files, and registration's configfs writes.

Registration runs against the stand-in configfs of test_regions (temporary:
the fakecfs integration tests replace it).
"""

from __future__ import annotations

import errno

import pytest
from test_regions import FakeConfigfs, world

from hbctl.cluster import (
    REGION_ACTIVE,
    ConfigError,
    Timeouts,
    is_local,
    parse,
    register,
    show,
    unregister,
)
from hbctl.errors import Code, O2cbError
from hbctl.sysroot import Sysroot

GOOD = """\
# written by o2cb_ctl
cluster:
\tnode_count = 2
\theartbeat_mode = local
\tname = ocfs2

node:
\tip_port = 7777
\tip_address = 10.0.0.1
\tnumber = 1
\tname = node1
\tcluster = ocfs2

node:
    ip_port = 7777      # spaces work as well as tabs
    ip_address = 10.0.0.2
    number = 2
    name = node2
    cluster = ocfs2
heartbeat:
\tregion = B7E82B346F634EEA831B1E24655B60BE
\tcluster = ocfs2
"""


def test_parse_good_file() -> None:
    cfg = parse(GOOD)
    (c,) = cfg.clusters
    assert (c.name, c.node_count, c.heartbeat_mode) == ("ocfs2", 2, "local")
    assert [(n.name, n.number, n.ip_address, n.ip_port) for n in c.nodes] == [
        ("node1", 1, "10.0.0.1", 7777),
        ("node2", 2, "10.0.0.2", 7777),
    ]
    assert c.regions == ("B7E82B346F634EEA831B1E24655B60BE",)
    assert cfg.cluster("nope") is None


def test_defaults_and_empty_file() -> None:
    assert parse("").clusters == ()
    assert parse("\n# nothing\n\n").clusters == ()
    (c,) = parse("cluster:\n\tname = a1\n").clusters
    assert (c.heartbeat_mode, c.node_count, c.nodes) == ("local", None, ())


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("\tname = x\n", 1, "outside of any stanza"),
        ("cluster\n\tname = x\n", 1, "stanza header"),
        ("clusters:\n", 1, "stanza header"),
        ("cluster:\n\tname x\n", 2, "key = value"),
        ("cluster:\n\tname =\n", 2, "missing value"),
        ("cluster:\n\tname = a\n\tname = b\n", 3, "given twice"),
        ("cluster:\n\tnode_count = 2\n", 1, "lacks name"),
        ("cluster:\n\tname = bad-name\n", 2, "letters or digits"),
        ("cluster:\n\tname = a234567890abcdefg\n", 2, "1-16"),
        ("cluster:\n\tname = a\n\theartbeat_mode = both\n", 3, "local or global"),
        ("cluster:\n\tname = a\n\tnode_count = two\n", 3, "not a number"),
        ("cluster:\n\tname = a\ncluster:\n\tname = a\n", 4, "defined twice"),
        (
            "cluster:\n\tname = a\n\nnode:\n\tname = n\n\tnumber = 255\n"
            "\tip_address = 1.2.3.4\n\tip_port = 7777\n\tcluster = a\n",
            6,
            "out of range 0..254",
        ),
        (
            "cluster:\n\tname = a\n\nnode:\n\tname = n\n\tnumber = 1\n"
            "\tip_address = 1.2.3.400\n\tip_port = 7777\n\tcluster = a\n",
            7,
            "IPv4",
        ),
        (
            "cluster:\n\tname = a\n\nnode:\n\tname = n\n\tnumber = 1\n"
            "\tip_address = 1.2.3.4\n\tip_port = 0\n\tcluster = a\n",
            8,
            "ip_port",
        ),
        ("cluster:\n\tname = a\n\nnode:\n\tname = n\n\tnumber = 1\n", 4, "lacks ip_address"),
        (
            "cluster:\n\tname = a\n\nnode:\n\tname = n\n\tnumber = 1\n"
            "\tip_address = 1.2.3.4\n\tip_port = 7777\n\tcluster = zz\n",
            4,
            "unknown cluster 'zz'",
        ),
        (
            "cluster:\n\tname = a\n"
            "node:\n\tname = n\n\tnumber = 1\n\tip_address = 1.2.3.4\n"
            "\tip_port = 1\n\tcluster = a\n"
            "node:\n\tname = m\n\tnumber = 1\n\tip_address = 1.2.3.5\n"
            "\tip_port = 1\n\tcluster = a\n",
            9,
            "number 1 already used by node 'n' (line 3)",
        ),
        ("cluster:\n\tname = a\nheartbeat:\n\tregion = abc\n\tcluster = a\n", 4, "hex"),
    ],
)
def test_bad_files_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "cluster.conf")
    assert info.value.line == line
    assert str(info.value).startswith(f"cluster.conf:{line}: ")
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("node", "host", "local"),
    [
        ("node1", "node1", True),
        ("node1", "NODE1.example.com", True),
        ("Node1", "node1", True),
        ("node1", "node10", False),
        ("node1", "node", False),
        ("node1.example", "node1.example.com", True),
        ("node1", "node2.node1", False),
    ],
)
def test_local_node_rule(node: str, host: str, local: bool) -> None:
    assert is_local(node, host) is local


def _fresh() -> tuple[Sysroot, FakeConfigfs]:
    sysroot, fs, _dev = world(cluster=None)
    return sysroot, fs


def test_register_writes_in_o2cbs_order() -> None:
    sysroot, fs = _fresh()
    added = register(sysroot, parse(GOOD), "ocfs2", node_name="node1", fs=fs)
    assert added == ["node1", "node2"]
    assert fs.log == [
        ("mkdir", "ocfs2"),
        ("write", "ocfs2/heartbeat/mode", "local"),
        ("mkdir", "ocfs2/node/node1"),
        ("write", "ocfs2/node/node1/ipv4_port", "7777"),
        ("write", "ocfs2/node/node1/ipv4_address", "10.0.0.1"),
        ("write", "ocfs2/node/node1/num", "1"),
        ("write", "ocfs2/node/node1/local", "1"),
        ("mkdir", "ocfs2/node/node2"),
        ("write", "ocfs2/node/node2/ipv4_port", "7777"),
        ("write", "ocfs2/node/node2/ipv4_address", "10.0.0.2"),
        ("write", "ocfs2/node/node2/num", "2"),
        ("write", "ocfs2/node/node2/local", "0"),
    ]


def test_reregister_keeps_matching_nodes_and_replaces_changed_ones() -> None:
    sysroot, fs = _fresh()
    register(sysroot, parse(GOOD), "ocfs2", node_name="node1", fs=fs)
    fs.log.clear()
    changed = parse(GOOD.replace("10.0.0.2", "10.0.0.3"))
    added = register(sysroot, changed, "ocfs2", node_name="node1", fs=fs)
    assert added == ["node2"]
    assert ("rmdir", "ocfs2/node/node2") in fs.log
    assert ("rmdir", "ocfs2/node/node1") not in fs.log
    assert ("write", "ocfs2/node/node2/ipv4_address", "10.0.0.3") in fs.log


def test_register_rolls_back_a_node_whose_write_fails() -> None:
    sysroot, fs = _fresh()
    fs.fail["num"] = errno.EEXIST  # e.g. the number is taken in the kernel
    with pytest.raises(O2cbError) as info:
        register(sysroot, parse(GOOD), "ocfs2", node_name="node1", fs=fs)
    assert info.value.code is Code.INTERNAL_FAILURE
    assert fs.log[-1] == ("rmdir", "ocfs2/node/node1")


def test_register_unknown_cluster_and_timeouts() -> None:
    sysroot, fs = _fresh()
    with pytest.raises(O2cbError, match="Configuration error"):
        register(sysroot, parse(GOOD), "nope", fs=fs)
    t = Timeouts(dead_threshold=31, idle_timeout_ms=30000, keepalive_delay_ms=2000)
    register(sysroot, parse(GOOD), "ocfs2", node_name="x", timeouts=t, fs=fs)
    assert fs.log[-3:] == [
        ("write", "ocfs2/heartbeat/dead_threshold", "31\n"),
        ("write", "ocfs2/idle_timeout_ms", "30000\n"),
        ("write", "ocfs2/keepalive_delay_ms", "2000\n"),
    ]


def test_unregister_refuses_while_a_region_exists_and_show() -> None:
    sysroot, fs = _fresh()
    register(sysroot, parse(GOOD), "ocfs2", node_name="node2", fs=fs)
    base = f"{sysroot.root}/sys/kernel/config/cluster/ocfs2"
    fs.mkdir(f"{base}/heartbeat/B7E82B346F634EEA831B1E24655B60BE")
    (info,) = show(sysroot, fs)
    assert info["cluster"] == "ocfs2" and info["mode"] == "local"
    assert info["nodes"]["node2"]["local"] == "1"
    assert list(info["regions"]) == ["B7E82B346F634EEA831B1E24655B60BE"]
    with pytest.raises(O2cbError) as err:
        unregister(sysroot, "ocfs2", fs)
    assert err.value.detail == REGION_ACTIVE
    fs.rmdir(f"{base}/heartbeat/B7E82B346F634EEA831B1E24655B60BE")
    unregister(sysroot, "ocfs2", fs)
    assert show(sysroot, fs) == []
