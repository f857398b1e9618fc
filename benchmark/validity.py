"""Is the suite a benchmark? The validity figures of `soupbench validate`, computed from stored runs.

The bar (issue "Make the micro suite a real benchmark"), per composite task:
- each expert beats `base` by at least `min_expert_gain` points on its own skill's task;
- `base` and each single expert score at most half of the best merge on the composite task;
- the best merge reaches at least `min_best_merge` on the composite task;
- method rankings on the composite task agree across seeds (mean Kendall tau >= `min_tau`).
Scores are fractions in [0, 1]; "points" are hundredths.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean

from benchmark.taskinfo import TaskInfo

NOT_MERGES = {"base"}


@dataclass(frozen=True)
class Bar:
    min_expert_gain: float = 0.30
    max_single_ratio: float = 0.5
    min_best_merge: float = 0.30
    min_tau: float = 0.5


@dataclass
class Check:
    what: str
    value: float | None
    needed: str
    ok: bool


@dataclass
class TaskValidity:
    task: str
    kind: str
    figures: dict[str, float | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau); 1.0 when undefined but identical."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    if denominator == 0:
        return 1.0 if x == y else 0.0
    return (concordant - discordant) / denominator


def _is_merge(method: str) -> bool:
    return method not in NOT_MERGES and not method.startswith("expert-")


def assess(scores: dict[tuple[str, str, int], float], tasks: list[TaskInfo], bar: Bar = Bar()) -> list[TaskValidity]:
    """Validity per task from primary scores keyed by (method, task, seed)."""
    by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (method, task, _seed), value in scores.items():
        by_cell[(method, task)].append(value)
    avg = {cell: mean(values) for cell, values in by_cell.items()}
    report = []
    for info in tasks:
        tv = TaskValidity(info.name, info.kind)
        base = avg.get(("base", info.name))
        tv.figures["base"] = base
        if info.kind == "skill":
            expert = avg.get((f"expert-{info.name}", info.name))
            tv.figures[f"expert-{info.name}"] = expert
            gain = None if expert is None or base is None else expert - base
            tv.figures["expert gain"] = gain
            tv.checks.append(Check(f"expert-{info.name} gain over base", gain, f">= {bar.min_expert_gain:.2f}",
                                   gain is not None and gain >= bar.min_expert_gain))
        else:
            merges = {m: v for (m, t), v in avg.items() if t == info.name and _is_merge(m)}
            best_name, best = max(merges.items(), key=lambda kv: kv[1], default=(None, None))
            tv.figures[f"best merge ({best_name})"] = best
            singles = {"base": base, **{f"expert-{s}": avg.get((f"expert-{s}", info.name)) for s in info.skills}}
            for name, value in singles.items():
                tv.figures[name] = value
                limit = None if best is None else best * bar.max_single_ratio
                tv.checks.append(Check(f"{name} <= {bar.max_single_ratio:g} x best merge", value,
                                       "<= " + ("?" if limit is None else f"{limit:.3f}"),
                                       value is not None and limit is not None and value <= limit))
            tv.checks.append(Check("best merge", best, f">= {bar.min_best_merge:.2f}",
                                   best is not None and best >= bar.min_best_merge))
            tv.figures.update(per_seed_extremes(scores, info.name, list(singles)))
            tau = rank_agreement(scores, info.name)
            tv.figures["mean Kendall tau across seeds"] = tau
            tv.checks.append(Check("rank agreement across seeds (mean Kendall tau)", tau, f">= {bar.min_tau:.2f}",
                                   tau is not None and tau >= bar.min_tau))
        report.append(tv)
    return report


def scores_by_seed(scores: dict[tuple[str, str, int], float], task: str) -> dict[int, dict[str, float]]:
    """{seed: {method: score}} of one task."""
    per_seed: dict[int, dict[str, float]] = defaultdict(dict)
    for (method, t, seed), value in scores.items():
        if t == task:
            per_seed[seed][method] = value
    return per_seed


def per_seed_extremes(scores: dict[tuple[str, str, int], float], task: str, singles: list[str]) -> dict[str, float]:
    """Per seed, the best merge and the best single model on `task`, named: the bar is checked on the
    means over seeds, and these show whether it holds seed by seed (weight merges can swing)."""
    per_seed = scores_by_seed(scores, task)
    figures = {}
    for seed in sorted(per_seed):
        for kind, names in (("best merge", [m for m in per_seed[seed] if _is_merge(m)]),
                            ("best single", [m for m in per_seed[seed] if m in singles])):
            if names:
                name = max(names, key=lambda m: per_seed[seed][m])
                figures[f"seed {seed}: {kind} ({name})"] = per_seed[seed][name]
    return figures


def rank_agreement(scores: dict[tuple[str, str, int], float], task: str) -> float | None:
    """Mean pairwise Kendall tau between seeds over the methods every seed has; None with < 2 seeds."""
    per_seed = scores_by_seed(scores, task)
    seeds = sorted(per_seed)
    if len(seeds) < 2:
        return None
    common = sorted(set.intersection(*(set(per_seed[s]) for s in seeds)))
    if len(common) < 2:
        return None
    taus = [kendall_tau([per_seed[a][m] for m in common], [per_seed[b][m] for m in common])
            for a, b in itertools.combinations(seeds, 2)]
    return mean(taus)


def mean_scores(scores: dict[tuple[str, str, int], float], task: str) -> dict[str, float]:
    """{method: mean over seeds} of one task."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for (method, t, _seed), value in scores.items():
        if t == task:
            by_method[method].append(value)
    return {method: mean(values) for method, values in by_method.items()}


def agreement_across_bases(scores_by_build: dict[str, dict[tuple[str, str, int], float]], task: str
                           ) -> tuple[float | None, dict[tuple[str, str], float]]:
    """Kendall tau between base builds of the methods' mean scores on `task` (means over each
    build's expert seeds, methods every build has): (mean over pairs, {(build, build): tau}).

    A ranking that holds on one pretraining run and not on another is a property of that run, not
    of the methods: the suite's verdict must survive a rebuild of its base (issue 11)."""
    means = {build: mean_scores(scores, task) for build, scores in scores_by_build.items()}
    builds = [b for b in means if means[b]]
    if len(builds) < 2:
        return None, {}
    common = sorted(set.intersection(*(set(means[b]) for b in builds)))
    if len(common) < 2:
        return None, {}
    pairs = {(a, b): kendall_tau([means[a][m] for m in common], [means[b][m] for m in common])
             for a, b in itertools.combinations(builds, 2)}
    return mean(pairs.values()), pairs
