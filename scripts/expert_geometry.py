"""How experts' task vectors relate, module by module: why a weight merge keeps or loses a skill.

    python scripts/expert_geometry.py EXPERT_DIR EXPERT_DIR [...]   # PEFT adapter folders
    python scripts/expert_geometry.py --release micro --seed 0      # the release's experts of a seed

Per module (and summed per module kind: q_proj, up_proj, ...): each expert's delta Frobenius norm,
the cosine between every pair of deltas, and how much of each expert survives task arithmetic's
mean (the norm of the mean's projection on the expert's direction over the expert's own norm: 0.5
for orthogonal experts of equal norm, less where another expert points against it). A merge that
loses a skill usually shows one expert much smaller than the other, or cosines far from zero.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.lora import Expert, module_union  # noqa: E402


def module_geometry(deltas: dict[str, torch.Tensor]) -> dict[str, float]:
    """Norms, pairwise cosines and survival under the mean for one module's dense deltas."""
    names = list(deltas)
    flat = {n: d.flatten().double() for n, d in deltas.items()}
    mean = sum(flat.values()) / len(flat)
    out: dict[str, float] = {}
    for n in names:
        norm = flat[n].norm().item()
        out[f"norm {n}"] = norm
        out[f"kept {n}"] = (mean @ flat[n]).item() / norm**2 if norm else float("nan")
    for a, b in itertools.combinations(names, 2):
        denominator = flat[a].norm() * flat[b].norm()
        out[f"cos {a}/{b}"] = (flat[a] @ flat[b] / denominator).item() if denominator else float("nan")
    return out


def geometry(experts: list[Expert]) -> dict[str, dict[str, float]]:
    """`module_geometry` per module, plus per module kind over the concatenated deltas."""
    per_module, by_kind = {}, defaultdict(dict)
    for module in module_union(experts):
        deltas = {}
        for e in experts:
            factors = e.modules.get(module)
            deltas[e.name] = factors.delta() if factors is not None else None
        shape = next(d.shape for d in deltas.values() if d is not None)
        deltas = {n: d if d is not None else torch.zeros(shape) for n, d in deltas.items()}
        per_module[module] = module_geometry(deltas)
        kind = module.rsplit(".", 1)[-1]
        for n, d in deltas.items():
            by_kind[kind].setdefault(n, []).append(d.flatten())
    kinds = {f"[{k}]": module_geometry({n: torch.cat(parts) for n, parts in v.items()}) for k, v in by_kind.items()}
    everything = {n: torch.cat([d for v in by_kind.values() for d in v[n]]) for n in next(iter(by_kind.values()))}
    return {**per_module, **kinds, "[all]": module_geometry(everything)}


def _release_experts(suite_name: str, seed: int) -> list[Expert]:
    from benchmark.adapters import load_expert
    from benchmark.base_model import prepare_base
    from benchmark.experts import skill_training_data
    from benchmark.keys import expert_key
    from benchmark.release import released_expert
    from benchmark.suite import load_suite

    suite = load_suite(suite_name)
    base = prepare_base(suite, None, device="cpu")
    data = skill_training_data(suite)
    experts = []
    for skill in suite.skill_names:
        folder = released_expert(expert_key(suite, base.fingerprint, skill, seed, data[skill]))
        if folder is None:
            raise SystemExit(f"the release has no {skill} expert of seed {seed} for this recipe")
        experts.append(load_expert(folder, name=skill))
    return experts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="PEFT adapter folders (named by their folder)")
    parser.add_argument("--release", help="a suite whose released experts to read instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modules", action="store_true", help="print every module, not only the kinds")
    args = parser.parse_args()
    if args.release:
        experts = _release_experts(args.release, args.seed)
    else:
        from benchmark.adapters import load_expert

        experts = [load_expert(f, name=Path(f).name) for f in args.folders]
    if len(experts) < 2:
        parser.error("give at least two experts")
    table = geometry(experts)
    columns = list(table["[all]"])
    print(f"{'module':<34}" + "".join(f"{c:>18}" for c in columns))
    for module, figures in table.items():
        if args.modules or module.startswith("["):
            print(f"{module:<34}" + "".join(f"{figures[c]:>18.4f}" for c in columns))


if __name__ == "__main__":
    main()
