"""The pytest plugin (``fakecfs_cluster``), run by pytester in a pytest of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakecfs_fixtures import require_fuse

pytest_plugins = ["pytester"]

EXAMPLE = '''
import json
import pytest
import trio


def test_kill_and_freeze(fakecfs_cluster):
    cluster = fakecfs_cluster(3)
    n0, n1, n2 = cluster.nodes
    assert n0.hbctl("refs", "-u", cluster.uuid).strip() == f"{cluster.uuid}: 1 refs"
    status = json.loads(n1.run("hbctl status --json", check=True).stdout)
    assert status["clusters"][0]["regions"][0]["refs"] == 1
    assert n2.run(["hostname"], check=True).stdout.strip() == "node2"
    n2.kill()
    down = n0.wait_for(live=[0, 1], event="node_down", node=2)
    assert down["region"] == cluster.uuid
    n1.freeze()
    n0.wait_for(live=[0], event={"kind": "node_down", "node": 1})
    n1.thaw()
    assert n1.wait_for(event="fenced")["kind"] == "fenced"


def test_fails_after_a_kill(fakecfs_cluster):
    cluster = fakecfs_cluster(2)
    cluster.nodes[1].kill()
    assert False, "teardown must still be clean"


async def test_trio(fakecfs_cluster):
    cluster = fakecfs_cluster(2)
    a, b = cluster.nodes
    b.fault(f"corrupt region={cluster.uuid}")
    event = await a.wait_for_async(event="bad_crc", node=1)
    assert event["node"] == 1
    b.stop()
    await a.wait_for_async(live=[0])
'''


def readme_example() -> str:
    """The README's plugin example, run as it is printed there."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("```python\nimport json\n\ndef test_survivors")
    return text[start + len("```python\n"):text.index("```", start + 3)]


def test_fixture_in_a_pytest_of_its_own(pytester: pytest.Pytester, tmp_path: Path) -> None:
    require_fuse()
    if os.geteuid() != 0:
        pytest.skip("the fixture needs root")
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_example=EXAMPLE, test_readme=readme_example())
    basetemp = tmp_path / "inner"
    result = pytester.runpytest_subprocess(f"--basetemp={basetemp}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*teardown must still be clean*"])
    # Every node of every test is gone: no mount under the inner basetemp remains.
    with open("/proc/mounts", encoding="utf-8") as f:
        assert str(basetemp) not in f.read()
