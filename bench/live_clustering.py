"""The cluster models as users get them: the live path, end to end, against batch k-means.

Per run: a fresh embedded stack (Tansu + redis-server), ``segworker run`` as a child
process and ``segworker produce-sample --accounts 500 --days 400 --seed S`` as another,
in one of two orderings: the worker first and the sample into it as it runs
(``live``), or the sample first and then the worker on the backlog (``backlog``). Once
the worker has consumed every event and its cluster models, memberships and outbox
stayed put for ``--quiet`` seconds (longer than two publish intervals), the bench reads
``/segments`` and every cluster's members over HTTP, and the final account states from
Redis.

Printed per run and clustering (behaviour ``cluster`` and ``needs_cluster``):

- empty clusters (size 0 in ``/segments``; target 0) and the smallest cluster's share;
- centroids outside the range of the data: a coordinate (prepared units, after
  ``log1p``) outside [min, max] of the accounts' final feature vectors (target 0);
- ARI live~batch: the live memberships against scikit-learn ``KMeans(k, n_init=10)``
  on the same accounts' features computed at the final stream time with the worker's
  ``FeatureView``, transformed and standardised as the published model does (target
  >= 0.9), next to ARI batch~batch: two such batch runs with different seeds, the
  agreement the data allow at all; ARI model~batch: each account's nearest centroid of
  the published model instead of its membership (the margin keeps an account in its
  cluster until another is 10 % closer);
- SSQ live/batch: the k-means objective (squared distances to the cluster means, same
  standardised vectors) of the live memberships over that of the batch run: near 1 is
  as tight a partition as batch k-means finds.

    .venv/bin/python bench/live_clustering.py [--seeds 1 2 3 4 5] [--orderings live backlog]

Needs scikit-learn (the ``bench`` extra). A run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import run_title  # noqa: E402
from worker.adapters.redis_store import RedisStateStore  # noqa: E402
from worker.adapters.state_codec import decode_state  # noqa: E402
from worker.config.clusterings import clusterings  # noqa: E402
from worker.config.settings import Settings  # noqa: E402
from worker.core.clustering import ClusterSnapshot  # noqa: E402
from worker.core.features import FeatureView  # noqa: E402
from worker.devtools.embedded import free_port, start_kafka, start_redis  # noqa: E402

console = Console(width=200)


@dataclass
class FamilyResult:
    family: str
    k: int
    version: int
    empty: int
    smallest_share: float
    outside: int
    ari_live_batch: float
    ari_model_batch: float
    ari_batch_batch: float
    ssq_ratio: float
    descriptions: dict[str, str]
    sizes: dict[str, int]


@dataclass
class RunResult:
    seed: int
    ordering: str
    events: int
    accounts: int
    catch_up_seconds: float
    settle_seconds: float
    families: list[FamilyResult]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def _members(port: int, family: str, segment: str) -> set[str]:
    members: set[str] = set()
    cursor = 0
    while True:
        page = _get(port, f"/segments/{family}/{segment}/members?cursor={cursor}&count=1000")
        members.update(page["members"])
        cursor = page["next_cursor"]
        if not cursor:
            return members


def _produce_sample(env: dict[str, str], accounts: int, days: int, seed: int) -> int:
    command = [sys.executable, "-m", "worker.cli", "produce-sample"]
    command += ["--accounts", str(accounts), "--days", str(days), "--seed", str(seed)]
    output = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True).stdout
    return int(output.decode().split("produced ")[1].split()[0])


def _committed(admin: Any, group: str, topics: tuple[str, ...]) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(
        meta.offset for tp, meta in offsets.items() if tp.topic in topics and meta.offset > 0
    )


def _state_of_models(redis: Any, port: int, families: list[str]) -> tuple[Any, ...]:
    """What must stop changing before the run is read: model versions, cluster sizes,
    the outbox."""
    versions = tuple(redis.get(f"seg:cluster:{family}") for family in families)
    sizes = tuple(
        (row["family"], row["segment_id"], row["size"])
        for row in _get(port, "/segments")["segments"]
        if row["family"] in families
    )
    return versions, sizes, redis.hlen("seg:outbox")


def run_once(
    seed: int,
    ordering: str,
    accounts: int,
    days: int,
    quiet: float,
    timeout: float,
    dump: Path | None = None,
) -> RunResult:
    import redis as redis_client

    from worker.adapters.kafka_clients import import_kafka_python

    kafka_module = import_kafka_python()
    workdir = Path(tempfile.mkdtemp(prefix="segworker-live-clusters-"))
    kafka = start_kafka(workdir / "kafka")
    redis_server = start_redis(workdir / "redis")
    worker: subprocess.Popen[bytes] | None = None
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "REDIS_URL": redis_server.url,
        "SEGWORKER_WEB_PORT": str(port),
        "SEGWORKER_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers, redis_url=redis_server.url)
    families = [c.family for c in clusterings(settings)]
    log_path = workdir / "worker.log"

    def start_worker() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "run"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}; see {log_path}")
            try:
                _get(port, "/ready")
                return process
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker not ready; see {log_path}") from None
                time.sleep(0.5)

    redis = redis_client.Redis.from_url(redis_server.url)
    admin = kafka_module.KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        if ordering == "live":
            worker = start_worker()
            produced = _produce_sample(env, accounts, days, seed)
        else:
            produced = _produce_sample(env, accounts, days, seed)
            worker = start_worker()
        started = time.monotonic()
        deadline = started + timeout
        while _committed(admin, settings.app_id, settings.input_topics) < produced:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker did not catch up; see {log_path}")
            time.sleep(1)
        caught_up = time.monotonic()
        last = _state_of_models(redis, port, families)
        last_change = time.monotonic()
        while time.monotonic() - last_change < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster models did not settle; see {log_path}")
            time.sleep(5)
            now = _state_of_models(redis, port, families)
            if now != last:
                last, last_change = now, time.monotonic()
        settled = time.monotonic()
        overview = _get(port, "/segments")["segments"]
        live: dict[str, dict[str, str]] = {family: {} for family in families}
        for row in overview:
            if row["family"] in live:
                for account in _members(port, row["family"], row["segment_id"]):
                    live[row["family"]][account] = row["segment_id"]
        if dump is not None:
            dump = dump / f"seed{seed}-{ordering}"
            dump.mkdir(parents=True, exist_ok=True)
        results = _score(redis, overview, live, families, seed, dump)
        return RunResult(
            seed,
            ordering,
            produced,
            len(next(iter(live.values()), {})),
            caught_up - started,
            settled - caught_up,
            results,
        )
    finally:
        admin.close()
        redis.close()
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        kafka.stop()
        redis_server.stop()


def _score(
    redis: Any,
    overview: list[dict[str, Any]],
    live: dict[str, dict[str, str]],
    families: list[str],
    seed: int,
    dump: Path | None = None,
) -> list[FamilyResult]:
    store = RedisStateStore(None, "seg")  # type: ignore[arg-type]  # key names only
    clock = redis.zscore(store.clock_key, "stream")
    final_day = int(clock // 86400)
    states = {}
    for key in redis.scan_iter(match=store.keys.state_pattern, count=1000):
        account = key.decode().split(":acct:")[1].strip("{}")
        states[account] = decode_state(account, redis.get(key))
    accounts = sorted(states)
    views = {a: FeatureView(states[a], final_day) for a in accounts}
    results = []
    for clustering in clusterings(Settings()):
        family = clustering.family
        snapshot = ClusterSnapshot.from_json(redis.get(f"seg:cluster:{family}"))
        spec = snapshot.spec
        prepared = np.array(
            [[d.value(views[a].get(d.name)) for d in spec.dimensions] for a in accounts]
        )
        z = (prepared - np.array(snapshot.means)) / np.array(snapshot.stds)
        sizes = {r["segment_id"]: r["size"] for r in overview if r["family"] == family}
        total = sum(sizes.values()) or 1
        low, high = prepared.min(axis=0), prepared.max(axis=0)
        slack = 1e-9 + 1e-6 * (high - low)
        outside = sum(
            any(
                v < lo - s or v > hi + s for v, lo, hi, s in zip(row, low, high, slack, strict=True)
            )
            for row in snapshot.prepared_centroids().values()
        )
        labels = [live[family].get(a, "none") for a in accounts]
        batch = KMeans(n_clusters=clustering.k, n_init=10, random_state=seed).fit(z)
        centroids = np.array([c.centroid for c in snapshot.clusters])
        nearest = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        if dump is not None:
            np.savez(
                dump / f"{family}.npz", z=z, live=np.array(labels), batch=batch.labels_,
                centroids=centroids, batch_centroids=batch.cluster_centers_,
            )  # fmt: skip
        # The k-means objective of the live partition: squared distances to its means.
        groups = np.unique(labels, return_inverse=True)[1]
        means = np.array([z[groups == g].mean(axis=0) for g in range(groups.max() + 1)])
        live_ssq = float(((z - means[groups]) ** 2).sum())
        other = KMeans(n_clusters=clustering.k, n_init=10, random_state=seed + 1000).fit(z)
        results.append(
            FamilyResult(
                family=family,
                k=clustering.k,
                version=snapshot.version,
                empty=sum(1 for size in sizes.values() if size == 0),
                smallest_share=min(sizes.values()) / total,
                outside=outside,
                ari_live_batch=float(adjusted_rand_score(batch.labels_, labels)),
                ari_model_batch=float(adjusted_rand_score(batch.labels_, nearest)),
                ari_batch_batch=float(adjusted_rand_score(batch.labels_, other.labels_)),
                ssq_ratio=live_ssq / float(batch.inertia_),
                descriptions={
                    r["segment_id"]: r["description"] for r in overview if r["family"] == family
                },
                sizes=sizes,
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument(
        "--orderings", nargs="+", default=["live", "backlog"], choices=["live", "backlog"]
    )
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--quiet", type=float, default=75.0, help="seconds without a change")
    parser.add_argument("--timeout", type=float, default=1200.0, help="per run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--dump", type=Path, default=None, help="save each run's vectors and labels (npz) here"
    )
    args = parser.parse_args()
    runs: list[RunResult] = []
    for seed in args.seeds:
        for ordering in args.orderings:
            result = run_once(
                seed, ordering, args.accounts, args.days, args.quiet, args.timeout, args.dump
            )
            runs.append(result)
            for f in result.families:
                console.print(
                    f"seed {seed} {ordering}: {f.family} v{f.version} empty {f.empty}, "
                    f"smallest {f.smallest_share:.1%}, outside {f.outside}, "
                    f"ARI live~batch {f.ari_live_batch:.3f}, model~batch {f.ari_model_batch:.3f} "
                    f"(batch~batch {f.ari_batch_batch:.3f}), "
                    f"SSQ live/batch {f.ssq_ratio:.3f}; "
                    f"caught up in {result.catch_up_seconds:.0f} s, "
                    f"settled {result.settle_seconds:.0f} s",
                    markup=False,
                )
                for cid, text in sorted(f.descriptions.items()):
                    console.print(f"    {cid} {f.sizes.get(cid, 0):4d}  {text}", markup=False)
    table = Table(
        title=run_title(f"Live-path clustering ({args.accounts} accounts, {args.days} days)")
    )
    for column in ("seed", "ordering", "events", "clustering", "empty", "smallest share",
                   "centroids outside data", "ARI live~batch", "ARI model~batch",
                   "ARI batch~batch", "SSQ live/batch"):  # fmt: skip
        table.add_column(column, justify="right")
    for run in runs:
        for f in run.families:
            table.add_row(
                str(run.seed), run.ordering, str(run.events), f.family, str(f.empty),
                f"{f.smallest_share:.1%}", str(f.outside), f"{f.ari_live_batch:.3f}",
                f"{f.ari_model_batch:.3f}", f"{f.ari_batch_batch:.3f}", f"{f.ssq_ratio:.3f}",
            )  # fmt: skip
    console.print(table)
    every = [f for run in runs for f in run.families]
    console.print(
        f"runs with an empty cluster: {sum(any(f.empty for f in run.families) for run in runs)} "
        f"of {len(runs)}; centroids outside the data: {sum(f.outside for f in every)}; "
        f"ARI live~batch min {min(f.ari_live_batch for f in every):.3f}, "
        f"mean {np.mean([f.ari_live_batch for f in every]):.3f}",
        markup=False,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**run.__dict__, "families": [f.__dict__ for f in run.families]} for run in runs],
                indent=1,
            )
        )


if __name__ == "__main__":
    # Small data: one BLAS/OpenMP thread is faster, and immune to busy neighbours.
    with threadpool_limits(limits=1):
        main()
