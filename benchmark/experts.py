"""Skill data and experts: each expert trained once per (base, data, recipe, seed), then cached."""

from __future__ import annotations

from collections.abc import Callable

from benchmark import cache, release
from benchmark.adapters import load_expert
from benchmark.base_model import BaseModel
from benchmark.keys import expert_key
from benchmark.lora import Expert
from benchmark.skill_data import load_skill_examples
from benchmark.suite import Suite
from benchmark.taskinfo import get_skill
from benchmark.training import Progress, train_lora

def skill_training_data(suite: Suite) -> dict[str, list[dict]]:
    """Each skill's training examples, deterministic given the suite's data seed: built by its task
    folder (`source: synthetic`), or read from a real data set by its named loader (`source: files`)."""
    data = {}
    for skill in suite.skills:
        if skill.source == "files":
            data[skill.name] = load_skill_examples(skill, suite.data_seed)
            continue
        info = get_skill(skill.name)
        data[skill.name] = info.build_train(skill.train_size, suite.data_seed, **suite.task_options.get(skill.name, {}))
    return data


def prepare_experts(
    suite: Suite,
    base: BaseModel,
    seed: int,
    data: dict[str, list[dict]],
    progress_factory: Callable[[str], Progress] | None = None,
    log: Callable[[str], None] = lambda message: None,
    use_release: bool = True,
    skills: tuple[str, ...] | None = None,
) -> list[Expert]:
    """Each skill's expert (of `skills`, default every skill of the suite): from the release when
    it holds this recipe hash (files checked), else from the cache, training (and caching) the
    missing ones."""
    experts = []
    for skill in skills or suite.skill_names:
        key = expert_key(suite, base.fingerprint, skill, seed, data[skill])
        folder = release.released_expert(key) if use_release else None
        if folder is not None:
            log(f"expert {skill} (seed {seed}) from the release ({folder})")
        else:
            folder = cache.cache_dir("experts", key)
            if not cache.usable(folder, f"expert {skill} (seed {seed})", log):
                progress = progress_factory(f"expert {skill} (seed {seed})") if progress_factory else None
                model = train_lora(base.fresh(), data[skill], base.tokenizer, suite.expert, seed, progress)
                # Name the base by its content, not by the cache path it was loaded from: the same
                # expert trained on two machines then has the same files (and fingerprint).
                for config in model.peft_config.values():
                    config.base_model_name_or_path = base.fingerprint
                staging = cache.staging_dir(folder)
                model.save_pretrained(staging, save_embedding_layers=False)
                cache.publish(staging, folder)
        experts.append(load_expert(folder, name=skill, base_model=base.model))
    return experts
