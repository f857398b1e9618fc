"""The shared training loop in float32 and in bfloat16 mixed precision."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.micro.tokenizer import train_tokenizer
from benchmark.suite import LoraRecipe
from benchmark.training import encode_supervised, supervised_batches, train_lora
from tests.lora_fixtures import tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTS = [("The sky is", " blue"), ("Grass is", " green"), ("Snow is", " white"), ("Coal is", " black")]


def completion_loss(model, tokenizer, examples) -> float:
    batch = next(supervised_batches(encode_supervised(examples, tokenizer, 32), len(examples),
                                    tokenizer.pad_token_id, 0))
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_lora_training_learns_in_both_precisions(precision):
    """bfloat16 must train as well as float32. Autocast caches each weight's bfloat16 copy until its
    region exits: a region around the whole loop would train against step 0's weights forever, and
    the loss would not fall (the bug this test guards)."""
    tokenizer = train_tokenizer([p + t for p, t in FACTS] * 20, vocab_size=300)
    base = tiny_llama(vocab_size=len(tokenizer))
    examples = [{"prompt": p, "completion": t} for p, t in FACTS]
    before = completion_loss(base, tokenizer, examples)
    recipe = LoraRecipe(rank=4, alpha=8, lr=2e-2, steps=40, batch_size=4, warmup_steps=0,
                        target_modules=("q_proj", "v_proj", "down_proj", "lm_head"), precision=precision)
    trained = train_lora(copy.deepcopy(base), examples, tokenizer, recipe, seed=0)
    after = completion_loss(trained, tokenizer, examples)
    assert after < 0.25 * before, (precision, before, after)
