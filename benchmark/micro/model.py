"""Build the micro base: train the tokenizer, pretrain a small Llama from scratch, save it.

Saved with `save_pretrained` (safetensors) in a cache folder keyed by the recipe's hash, so it is
built once per recipe and loads with plain `from_pretrained` afterwards.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmark.micro import corpus
from benchmark.micro.tokenizer import train_tokenizer
from benchmark.suite import MicroBase
from benchmark.training import Checkpoint, packed_batches, train_loop

# Bump when the corpus or the build changes in a way the recipe's fields do not capture.
BUILD_VERSION = 2


def llama_config(spec: MicroBase, vocab_size: int, eos_id: int, pad_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        initializer_range=spec.init_std,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_micro_base(
    spec: MicroBase,
    out_dir: Path,
    format_samples: list[str],
    progress: Callable[[int, int, float], None] | None = None,
    device: str = "cpu",
    checkpoint: Checkpoint | None = None,
) -> None:
    """Pretrain the micro base into `out_dir` (resuming from `checkpoint` when one was saved).

    `format_samples` are a few rendered task prompts, used only to train the tokenizer so that
    the labels of the formats are whole tokens; they never enter the pretraining corpus.
    """
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    docs = list(corpus.documents(spec.corpus_documents, spec.seed, spec.corpus_mix))
    tokenizer = train_tokenizer(itertools.chain(docs[:20_000], format_samples), spec.vocab_size)
    ids: list[int] = []
    for encoded in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    stream = torch.tensor(ids, dtype=torch.long)

    config = llama_config(spec, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).to(device)
    batches = packed_batches(stream, spec.seq_len, spec.batch_size, spec.seed)
    resumed_at, earlier_seconds = checkpoint.progress() if checkpoint is not None else (0, 0.0)
    prepared = time.perf_counter()
    final_loss = train_loop(model, list(model.parameters()), batches, spec.steps, spec.lr,
                            spec.warmup_steps, weight_decay=0.01, progress=progress,
                            precision=spec.precision, checkpoint=checkpoint)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "pretraining.txt").write_text(
        f"corpus tokens: {stream.numel()}\nsteps: {spec.steps}\nfinal loss: {final_loss:.4f}\n"
        f"corpus and tokenizer seconds: {prepared - started:.1f}\n"
        f"pretraining seconds: {time.perf_counter() - prepared:.1f}\ndevice: {device}\n"
        + (f"resumed at step {resumed_at}: the steps before took {earlier_seconds:.1f} s in earlier "
           "sessions (0 when the checkpoint predates this record)\n" if resumed_at else "")
    )
