"""The batch runner with the real stages on a tiny digits zoo, and the Ray executor vs the local one."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml
from batch_util import check_files_whole, fingerprint
from rich.console import Console

from xairobust.batch.runner import BatchOptions, run_batch


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))  # noqa: SIM115


def real_zoo(tmp_path):
    """standard vs pgd on digits, 2 seeds, real attack/explain/score/report at toy sizes."""
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({
        "name": "real",
        "datasets": ["digits"],
        "models": [{"name": "digits_cnn", "kwargs": {"width": 4}}],
        "methods": [{"name": "standard", "label": "Standard"},
                    {"name": "pgd", "label": "PGD", "params": {"eps": 0.1, "steps": 2}}],
        "seeds": 2,
        "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
        "attack": {"eps": 0.1, "steps": 2, "autoattack": False, "n": 32, "device": "cpu"},
        "explain": {"n": 8, "device": "cpu"},
        "explainers": [{"name": "ig", "params": {"n_steps": 8}}],
        "score": {"metrics": "complexity,sparseness", "device": "cpu"},
        "report": {"figures": False},
    }, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def real_local(tmp_path_factory):
    """The real zoo run once with the local executor: (zoo file, root, result)."""
    tmp = tmp_path_factory.mktemp("real")
    zoo = real_zoo(tmp)
    root = tmp / "local"
    return zoo, root, run_batch(zoo, BatchOptions(root=str(root), workers=2, quiet=True), out=quiet())


@pytest.mark.slow
def test_real_stages_end_to_end_and_resume(real_local):
    zoo, root, first = real_local
    failed = {j: o.error for j, o in first.outcomes.items() if o.status != "done"}
    assert first.ok, failed
    report = root / "results/real/digits_digits_cnn"
    assert first.report_dirs() == [report]
    csv = (report / "table.csv").read_text()
    assert "Standard" in csv and "PGD" in csv
    assert (report / "table.tex").read_text().count("\\toprule") >= 1
    for run in (root / "runs/real").iterdir():
        if run.is_dir():
            for name in ("run.json", "robustness.json", "attributions/ig.safetensors", "scores/ig.csv"):
                assert (run / name).is_file(), run / name
    assert check_files_whole(root) == []
    files = [p for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and p.suffix != ".lock"]
    before = fingerprint(files)
    again = run_batch(zoo, BatchOptions(root=str(root), workers=2, quiet=True), out=quiet())
    assert again.ok and again.count("cached") == len(again.plan.jobs)
    assert fingerprint(files) == before


@pytest.mark.slow
def test_ray_executor_gives_the_same_tables_as_local(real_local, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    zoo, local_root, local = real_local
    try:
        on_ray = run_batch(zoo, BatchOptions(root=str(tmp_path / "ray"), executor="ray", workers=2, quiet=True),
                           out=quiet())
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert local.ok and on_ray.ok, {j: o.error for j, o in on_ray.outcomes.items() if o.status != "done"}
    assert "ray" in on_ray.executor and "2 CPUs" in on_ray.executor
    assert on_ray.count("done") == len(on_ray.plan.jobs)  # all ran on Ray, nothing reused
    report = "results/real/digits_digits_cnn"
    for name in ("table.csv", "table.md", "table.tex", "stats.csv"):
        assert (tmp_path / "ray" / report / name).read_bytes() == (local_root / report / name).read_bytes(), name
    for f in (local_root / "runs").rglob("*.safetensors"):
        assert (tmp_path / "ray" / f.relative_to(local_root)).read_bytes() == f.read_bytes()
    for f in (local_root / "runs").rglob("scores/*.csv"):
        assert (tmp_path / "ray" / f.relative_to(local_root)).read_bytes() == f.read_bytes()


def _node_running(cluster, pid: int):
    """The worker node of ``cluster`` whose raylet is an ancestor of process ``pid`` (or None)."""
    import psutil

    try:
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.NoSuchProcess:
        return None
    for node in cluster.worker_nodes:
        raylets = node.all_processes.get("raylet", [])
        if any(info.process.pid in ancestors for info in raylets):
            return node
    return None


def _job_starts(root) -> dict:
    """Per job log under ``root``: the pids of every start line the worker wrote (one per attempt)."""
    starts = {}
    for log in root.rglob("logs/*.log"):
        pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in log.read_text().splitlines()
                if line.startswith("=== ") and line.endswith(")") and ", pid " in line]
        starts[log] = pids
    return starts


@pytest.mark.slow
def test_ray_cluster_losing_a_node_mid_batch_still_gives_the_local_tables(real_local, tmp_path):
    """A head and two 1-CPU worker nodes on this machine; one worker node is killed while it runs a
    job. Ray retries the lost task on the surviving node (system failures only: a failing stage is
    not retried), and the tables, weights and scores equal the local run's byte for byte."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    pytest.importorskip("psutil", reason="psutil (a Ray dependency) finds which node runs a job")
    import threading

    from ray.cluster_utils import Cluster

    zoo, local_root, local = real_local
    root = tmp_path / "cluster"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        outcome: dict = {}
        batch = threading.Thread(target=lambda: outcome.update(result=run_batch(
            zoo, BatchOptions(root=str(root), executor="ray", quiet=True), out=quiet())))
        batch.start()
        killed = None
        while killed is None and batch.is_alive():
            for log, pids in _job_starts(root).items():
                node = _node_running(cluster, pids[-1]) if pids else None
                if node is not None:
                    cluster.remove_node(node, allow_graceful=False)
                    killed = (log, pids[-1])
                    break
            else:
                batch.join(0.05)
        batch.join(600)
        assert not batch.is_alive(), "the batch did not finish after the node loss"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert killed is not None, "no job was running on a worker node to kill"
    result = outcome["result"]
    assert result.ok, {j: o.error for j, o in result.outcomes.items() if o.status != "done"}
    retried = _job_starts(root)[killed[0]]
    assert len(retried) == 2 and retried[0] == killed[1], retried  # the killed attempt, then one retry
    assert check_files_whole(root) == []  # no half-written or temporary file left by the killed job
    report = "results/real/digits_digits_cnn"
    for name in ("table.csv", "table.md", "table.tex", "stats.csv"):
        assert (root / report / name).read_bytes() == (local_root / report / name).read_bytes(), name
    ours = sorted(p.relative_to(root) for p in (root / "runs").rglob("*") if p.is_file() and "logs" not in p.parts)
    theirs = sorted(p.relative_to(local_root) for p in (local_root / "runs").rglob("*")
                    if p.is_file() and "logs" not in p.parts)
    assert ours == theirs  # no duplicated or missing file
    for rel in theirs:
        if rel.suffix == ".safetensors" or (rel.parent.name == "scores" and rel.suffix == ".csv"):
            assert (root / rel).read_bytes() == (local_root / rel).read_bytes(), rel
        elif rel.name == "history.csv":  # the same curves; only the wall time of each epoch differs
            ours_h, theirs_h = (pd.read_csv(r / rel).drop(columns="time_s") for r in (root, local_root))
            pd.testing.assert_frame_equal(ours_h, theirs_h, check_exact=True)
