"""Training loops: pretraining the micro base, experts and data mixing (LoRA), CAT's weights.

One loop serves all of them (AdamW, linear warm-up then cosine decay, gradient clipping); what
differs is which parameters are trainable and what the batches hold. Supervised batches mask the
prompt, so a LoRA learns the completion given the prompt, as an instruction-tuned expert does.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from benchmark.suite import LoraRecipe, Precision

if TYPE_CHECKING:  # peft (and transformers under it) costs seconds to import; only training needs it
    from peft import LoraConfig, PeftModel

Progress = Callable[[int, int, float], None]  # (step, total, loss)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Checkpoint:
    """Where a long loop keeps its state, and how often (in steps) it saves it."""

    path: Path
    every: int = 100

    def progress(self) -> tuple[int, float]:
        """(steps done, seconds they took over every session) of the saved state; (0, 0) if none."""
        if not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        return state["step"], state.get("seconds", 0.0)

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)  # a crash while saving leaves the previous checkpoint


def train_loop(
    model: torch.nn.Module,
    parameters: Sequence[torch.nn.Parameter],
    batches: Iterator[dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    progress: Progress | None = None,
    precision: Precision = "float32",
    checkpoint: Checkpoint | None = None,
) -> float:
    """Run `steps` optimiser steps; returns the mean loss of the last 10% of steps.

    With a `checkpoint`, the loop saves its whole state (weights, optimiser, schedule, step) every
    `checkpoint.every` steps and resumes from the saved state when there is one: a build of most of
    an hour survives an interrupted session. The batches of the steps already done are drawn and
    dropped, so a resumed run trains on the same batches as one that never stopped.

    `precision="bfloat16"` runs each forward pass under autocast (weights and optimiser stay
    float32): 1.6x the tokens per second of float32 on a CPU with AVX512-BF16 for the micro base
    (scripts/bench_train.py).
    The autocast region is entered per step, never around the loop: autocast caches the low-precision
    copy of each weight until its region exits, so one region around the loop would keep training
    against the weights of step 0.
    """
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup_steps, steps))
    model.train()
    tail: list[float] = []
    device = next(model.parameters()).device
    first, earlier_seconds, started = 0, 0.0, time.perf_counter()
    if checkpoint is not None and checkpoint.path.is_file():
        state = torch.load(checkpoint.path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first, tail, earlier_seconds = state["step"], state["tail"], state.get("seconds", 0.0)
        for _ in range(first):
            next(batches)
    for step in range(first, steps):
        if checkpoint is not None and step > first and step % checkpoint.every == 0:
            checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict(), "step": step, "tail": tail,
                             "seconds": earlier_seconds + time.perf_counter() - started})
        batch = {k: v.to(device) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        value = loss.item()
        if step >= steps * 0.9:
            tail.append(value)
        if progress is not None:
            progress(step + 1, steps, value)
    model.eval()
    return sum(tail) / max(1, len(tail))


def packed_batches(token_ids: torch.Tensor, seq_len: int, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Random windows of a packed token stream, for pretraining on all tokens."""
    generator = torch.Generator().manual_seed(seed)
    n_windows = token_ids.numel() - seq_len - 1
    while True:
        starts = torch.randint(0, n_windows, (batch_size,), generator=generator)
        windows = torch.stack([token_ids[s : s + seq_len] for s in starts.tolist()])
        yield {"input_ids": windows, "labels": windows.clone()}


def encode_supervised(examples: Sequence[dict], tokenizer, max_length: int,
                      train_on_inputs: bool = False) -> list[tuple[list[int], int]]:
    """(token ids, length of the masked prefix) per example: prompt and completion encoded apart,
    as at eval time. The prompt is masked unless `train_on_inputs` (then the loss covers every token,
    as alpaca-lora's `train_on_inputs=True`)."""
    encoded = []
    for example in examples:
        prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        completion = tokenizer(example["completion"], add_special_tokens=False)["input_ids"]
        ids = (prompt + completion + [tokenizer.eos_token_id])[:max_length]
        encoded.append((ids, 0 if train_on_inputs else len(prompt)))
    return encoded


def supervised_batches(
    encoded: Sequence[tuple[list[int], int]], batch_size: int, pad_id: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled epochs of right-padded batches with the prompt and the padding masked out."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order.extend(fresh)
        chosen = [encoded[i] for i in order[:batch_size]]
        del order[:batch_size]
        yield collate_supervised(chosen, pad_id)


def collate_supervised(chosen: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch; labels only on the completion (prompt and padding are -100)."""
    width = max(len(ids) for ids, _ in chosen)
    input_ids = torch.full((len(chosen), width), pad_id)
    labels = torch.full((len(chosen), width), -100)
    attention = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(chosen):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def lora_config(recipe: LoraRecipe) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        use_rslora=recipe.use_rslora,
        target_modules=list(recipe.target_modules),
        lora_dropout=recipe.dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )


def train_lora(
    base_model: torch.nn.Module,
    examples: Sequence[dict],
    tokenizer,
    recipe: LoraRecipe,
    seed: int,
    progress: Progress | None = None,
) -> PeftModel:
    """Train one LoRA on supervised examples with the suite's recipe (experts and data mixing):
    `recipe.steps` steps, or `recipe.epochs` passes over `examples` when the recipe counts epochs."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(base_model, lora_config(recipe))
    trainable = [p for p in model.parameters() if p.requires_grad]
    batches = supervised_batches(
        encode_supervised(examples, tokenizer, recipe.max_length, recipe.train_on_inputs), recipe.batch_size,
        tokenizer.pad_token_id, seed,
    )
    train_loop(model, trainable, batches, recipe.steps_for(len(examples)), recipe.lr, recipe.warmup_steps,
               recipe.weight_decay, progress, recipe.precision)
    return model


def sample_examples(examples_by_skill: dict[str, list[dict]], fraction: float, seed: int) -> list[dict]:
    """A `fraction` sample of each skill's training data, pooled (CAT's 5% of the union)."""
    rng = random.Random(seed)
    pooled: list[dict] = []
    for skill in sorted(examples_by_skill):
        examples = examples_by_skill[skill]
        k = max(1, round(len(examples) * fraction))
        pooled.extend(rng.sample(examples, k))
    rng.shuffle(pooled)
    return pooled


class Trainer:
    """The suite's training services, handed to methods that train (CAT, data mixing).

    It owns the tokenizer, the expert recipe and the progress display, so a method file says what
    to train on what, never how a loop runs.
    """

    def __init__(self, tokenizer, recipe: LoraRecipe, progress_factory: Callable[[str], Progress] | None = None):
        self.tokenizer = tokenizer
        self.recipe = recipe
        self._progress_factory = progress_factory

    def _progress(self, label: str) -> Progress | None:
        return self._progress_factory(label) if self._progress_factory else None

    def train_lora(self, base_model: torch.nn.Module, examples: Sequence[dict], seed: int,
                   label: str, steps: int | None = None) -> PeftModel:
        """`steps` overrides a recipe that counts steps; a recipe that counts epochs runs its epochs
        over `examples` whatever the caller computed (data mixing: over the union of the skills)."""
        recipe = self.recipe if steps is None or self.recipe.epochs is not None else \
            self.recipe.model_copy(update={"steps": steps})
        return train_lora(base_model, examples, self.tokenizer, recipe, seed, self._progress(label))

    def fit(self, model: torch.nn.Module, parameters: Sequence[torch.nn.Parameter],
            examples: Sequence[dict], steps: int, lr: float, batch_size: int, seed: int, label: str) -> float:
        """Supervised training of the given parameters only (everything else stays frozen)."""
        for p in model.parameters():
            p.requires_grad_(False)
        for p in parameters:
            p.requires_grad_(True)
        batches = supervised_batches(
            encode_supervised(examples, self.tokenizer, self.recipe.max_length, self.recipe.train_on_inputs),
            batch_size, self.tokenizer.pad_token_id, seed,
        )
        warmup = self.recipe.fit_warmup_steps
        warmup = min(10, steps // 10) if warmup is None else min(warmup, steps)
        return train_loop(model, parameters, batches, steps, lr, warmup_steps=warmup,
                          progress=self._progress(label), precision=self.recipe.precision)
