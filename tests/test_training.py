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


class _Interrupted(Exception):
    pass


def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path):
    """Stopped after a checkpoint and resumed, the loop ends on exactly the weights of a run that
    never stopped (same batches, optimiser state and schedule), and without the checkpoint it
    would not (the interrupted run's weights differ)."""
    from benchmark.training import Checkpoint, packed_batches, train_loop

    stream = torch.randint(0, 64, (4_000,), generator=torch.Generator().manual_seed(0))

    def fresh_model():
        torch.manual_seed(0)
        return tiny_llama()

    def run(model, checkpoint=None, stop_at=None):
        def progress(step, total, loss):
            if step == stop_at:
                raise _Interrupted
        return train_loop(model, list(model.parameters()), packed_batches(stream, 16, 4, 1), 12, 1e-2,
                          warmup_steps=2, progress=progress, checkpoint=checkpoint)

    straight = fresh_model()
    run(straight)
    checkpoint = Checkpoint(tmp_path / "ckpt" / "state.pt", every=4)
    interrupted = fresh_model()
    with pytest.raises(_Interrupted):
        run(interrupted, checkpoint, stop_at=10)  # saved at steps 4 and 8, stopped in step 10
    assert torch.load(checkpoint.path, weights_only=False)["step"] == 8
    done, seconds = checkpoint.progress()
    assert done == 8 and seconds > 0  # the time of the steps before, for the build's record
    assert any(not torch.equal(a, b) for a, b in zip(interrupted.state_dict().values(), straight.state_dict().values()))
    resumed = fresh_model()
    run(resumed, checkpoint)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name
