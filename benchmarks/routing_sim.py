"""Routing simulation: mean turnaround of our brokering policy beside two baselines.

Many synthetic clusters (different sizes and node speeds), Poisson arrivals of jobs
with random node counts, work (TFLOP of compute per node) and time limits. Each
cluster runs its queue first-come-first-served on whole nodes. A job runs for
work / node rate. Policies, run on the very same job stream:
- ours: ``broker.services.brokering.score`` on each cluster's live load (idle nodes,
  queue depth) with the default weights, among the clusters the job fits;
- round-robin over the clusters the job fits;
- least-loaded: the fitting cluster with the fewest queued+running jobs per node.
Prints mean and p95 turnaround (wait + run) per policy, median over seeds.

    .venv/bin/python benchmarks/routing_sim.py [--jobs 4000] [--clusters 8] [--seeds 5]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.services.brokering import Load, Weights, score


@dataclass
class SimCluster:
    name: str
    nodes: int
    rate_mflops: int
    free: int = 0
    queue: list[tuple[int, float, float]] = field(default_factory=list)  # (nodes, run_s, t_submit)
    running: int = 0

    def __post_init__(self) -> None:
        self.free = self.nodes


@dataclass(frozen=True)
class SimJob:
    at: float
    nodes: int
    work_tflop: float  # per node
    limit_min: int


def make_clusters(n: int, rng: random.Random) -> list[SimCluster]:
    return [
        SimCluster(
            f"c{i}", rng.choice([4, 8, 16, 32, 64]), rng.choice([50_000, 100_000, 200_000, 400_000])
        )
        for i in range(n)
    ]


def make_jobs(n: int, rng: random.Random, rate: float) -> list[SimJob]:
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        nodes = rng.choice([1, 1, 1, 2, 2, 4, 8, 16])
        work = rng.lognormvariate(5.5, 1.0)  # TFLOP per node: minutes to hours
        out.append(SimJob(t, nodes, work, 240))
    return out


Policy = Callable[[SimJob, list[SimCluster]], SimCluster]


def ours(job: SimJob, fits: list[SimCluster]) -> SimCluster:
    def key(c: SimCluster) -> float:
        load = Load(c.nodes, c.free, len(c.queue), c.running)
        return score(job.nodes, job.limit_min, c.rate_mflops, 0.0, load, Weights()).total

    return min(fits, key=key)


def round_robin() -> Policy:
    counter = itertools.count()

    def pick(job: SimJob, fits: list[SimCluster]) -> SimCluster:
        return fits[next(counter) % len(fits)]

    return pick


def least_loaded(job: SimJob, fits: list[SimCluster]) -> SimCluster:
    return min(fits, key=lambda c: (len(c.queue) + c.running) / c.nodes)


def simulate(clusters: list[SimCluster], jobs: list[SimJob], policy: Policy) -> list[float]:
    events: list[tuple[float, int, str, SimCluster, int]] = []  # (time, seq, kind, cluster, nodes)
    seq = itertools.count()
    turnaround: list[float] = []

    def start_ready(c: SimCluster, now: float) -> None:
        while c.queue and c.queue[0][0] <= c.free:
            nodes, run_s, submitted = c.queue.pop(0)
            c.free -= nodes
            c.running += 1
            turnaround.append(now - submitted + run_s)
            heapq.heappush(events, (now + run_s, next(seq), "end", c, nodes))

    for job in jobs:
        while events and events[0][0] <= job.at:
            t, _, _, c, nodes = heapq.heappop(events)
            c.free += nodes
            c.running -= 1
            start_ready(c, t)
        fits = [c for c in clusters if c.nodes >= job.nodes]
        c = policy(job, fits)
        run_s = job.work_tflop * 1e12 / (c.rate_mflops * 1e6)
        c.queue.append((job.nodes, run_s, job.at))
        start_ready(c, job.at)
    while events:
        t, _, _, c, nodes = heapq.heappop(events)
        c.free += nodes
        c.running -= 1
        start_ready(c, t)
    return turnaround


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--load", type=float, default=0.02, help="arrivals per second")
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {
        "ours": [],
        "round-robin": [],
        "least-loaded": [],
    }
    for seed in range(args.seeds):
        rng = random.Random(seed)
        shape = make_clusters(args.clusters, rng)
        jobs = make_jobs(args.jobs, rng, args.load)
        for name, policy in (
            ("ours", ours),
            ("round-robin", round_robin()),
            ("least-loaded", least_loaded),
        ):
            fresh = [SimCluster(c.name, c.nodes, c.rate_mflops) for c in shape]
            t = sorted(simulate(fresh, jobs, policy))
            results[name].append((statistics.fmean(t), t[int(0.95 * len(t))]))
    base = statistics.median(m for m, _ in results["ours"])
    print(f"{args.jobs} jobs, {args.clusters} clusters, {args.seeds} seeds (medians)")
    print(f"{'policy':<14}{'mean turnaround s':>19}{'p95 s':>12}{'vs ours':>9}")
    for name, rows in results.items():
        mean = statistics.median(m for m, _ in rows)
        p95 = statistics.median(p for _, p in rows)
        print(f"{name:<14}{mean:>19.0f}{p95:>12.0f}{mean / base:>8.2f}x")


if __name__ == "__main__":
    main()
