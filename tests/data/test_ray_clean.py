"""`steel data clean --executor ray` on a local 2-CPU Ray instance bound to 127.0.0.1."""

import os
import re
import subprocess

import pytest

# Before Ray is imported: a local instance then binds every server to the loopback address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from steel.cli import main  # noqa: E402
from steel.data.clean.pipeline import _init_ray  # noqa: E402
from tests.data.clean_corpus import write_corpus  # noqa: E402

LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


@pytest.fixture(scope="module")
def local_ray(request):
    started = _init_ray(None, num_cpus=2)
    if started:
        request.addfinalizer(ray.shutdown)
    return ray


def _listeners_of(pids: set[int]) -> list[tuple[str, int]]:
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    listeners = []
    for line in output.splitlines():
        local_address = line.split()[3]
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                listeners.append((local_address, pid))
    return listeners


def test_ray_listens_on_loopback_only(local_ray):
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    listeners = _listeners_of(ray_pids)
    assert len(listeners) >= 3  # the GCS, the raylet and the workers at least
    exposed = [(address, pid) for address, pid in listeners if not address.startswith(LOOPBACK)]
    assert exposed == []


def test_ray_executor_matches_local(local_ray, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    common = ["data", "clean", "--recipe", "zh-web", *map(str, corpus), "--workers", "2"]
    assert main([*common, "--output", str(tmp_path / "local")]) == 0
    ray_args = ["--output", str(tmp_path / "ray"), "--executor", "ray", "--ray-cpus-per-task", "0.5"]
    assert main([*common, *ray_args]) == 0

    for name in ("00000.jsonl", "00001.jsonl"):
        assert (tmp_path / "ray" / "shards" / name).read_bytes() == (tmp_path / "local" / "shards" / name).read_bytes()
    assert (tmp_path / "ray" / "stats.json").read_bytes() == (tmp_path / "local" / "stats.json").read_bytes()
    assert local_ray.is_initialized()  # a Ray instance the caller started is left running

    # The workers that ran the tasks listen on the loopback address too.
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    assert [address for address, _ in _listeners_of(ray_pids) if not address.startswith(LOOPBACK)] == []
