"""The shipped micro release is what `benchmark/suites/micro.yaml` builds, byte for byte intact.

Until the release is built (see the README's status line), the README must say so; once it is
there, a change to the corpus, a recipe or a skill's data without a new release fails here.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.catalog import create_method
from benchmark.experts import skill_training_data
from benchmark.keys import base_recipe_hash, expert_key, trained_merge_key
from benchmark.release import DEFAULT_DIR, RELEASE_COMMAND, load_release
from benchmark.plan import expert_group
from benchmark.suite import load_suite

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_BUILT = "Status: the release is not built yet."


def test_the_micro_release_matches_micro_yaml_or_the_readme_says_it_is_not_built():
    release = load_release(DEFAULT_DIR)
    if release is None:
        assert NOT_BUILT in README.read_text(), f"no micro release in {DEFAULT_DIR}: build it with `{RELEASE_COMMAND}`"
        return
    assert NOT_BUILT not in README.read_text(), "the README still says the release is not built"
    suite = load_suite("micro")
    stale = f"rebuild the release with `{RELEASE_COMMAND}`"
    assert release.base["recipe_hash"] == base_recipe_hash(suite), f"micro's base recipe changed: {stale}"
    data = skill_training_data(suite)
    released = {(e["skill"], e["seed"]): e["recipe_hash"] for e in release.manifest["experts"]}
    for seed in suite.seeds:
        for skill in suite.skill_names:
            key = expert_key(suite, release.base["fingerprint"], skill, seed, data[skill])
            assert released.get((skill, seed)) == key, f"expert {skill} seed {seed} is not released as built now: {stale}"
    fingerprints = {(e["skill"], e["seed"]): e["fingerprint"] for e in release.manifest["experts"]}
    for entry in release.manifest.get("merges", []):  # a trained method's result, reused by every run
        method = create_method(entry["method"], suite.method_params.get(entry["method"], {}), suite.skill_names)
        group = expert_group(suite, "math_code")
        key = trained_merge_key(suite, method, entry["seed"], release.base["fingerprint"],
                                [fingerprints[(skill, entry["seed"])] for skill in group],
                                {skill: data[skill] for skill in group})
        assert entry["recipe_hash"] == key, (f"{entry['method']} seed {entry['seed']}: its released result is not keyed "
                                             f"as today's code computes it (its source changed?), so every run trains "
                                             f"it again: {stale}")
    release.verify_all()
    size = sum(p.stat().st_size for p in DEFAULT_DIR.rglob("*") if p.is_file())
    assert size <= 48 * 2**20, f"the release is {size / 2**20:.1f} MiB, over the 48 MiB it may take in git"
