"""The nucleus sampler looks only at the blocks of the vocabulary that can hold the nucleus; its
draws must still follow the exact top-p distribution, whatever the distribution's shape."""

import pytest
import torch

from bot.core.generation.nucleus import BLOCK, FIRST_TRY, top_p_sample
from tests.stats import binned, chi_square_p_value, exact_nucleus

DRAWS = 4000


def shaped_logits(vocab: int) -> torch.Tensor:
    """Rows of different shapes: peaked, flat (the fallback threshold), and heavy where the
    vocabulary's last, partial block holds the most likely tokens."""
    generator = torch.Generator().manual_seed(3)
    peaked = torch.randn(vocab, generator=generator) * 4
    flat = torch.randn(vocab, generator=generator) * 0.05
    tail = torch.randn(vocab, generator=generator)
    tail[-(vocab % BLOCK) :] += 6
    return torch.stack([peaked, flat, tail])


@pytest.mark.parametrize("top_p", [0.95, 0.5])
def test_each_row_draws_from_its_exact_nucleus_in_one_mixed_batch(top_p):
    vocab = 25 * BLOCK + 17  # a partial last block, as GPT-2's 50,257 tokens have
    logits = shaped_logits(vocab)
    torch.manual_seed(0)
    draws = top_p_sample(logits.repeat_interleave(DRAWS, 0), top_p).view(3, DRAWS)
    for row in range(3):
        nucleus = exact_nucleus(torch.softmax(logits[row], -1), top_p).double()
        counts = torch.bincount(draws[row], minlength=vocab).double()
        assert counts[nucleus == 0].sum() == 0  # nothing outside the nucleus
        assert chi_square_p_value(*binned(counts, nucleus)) > 1e-3
    flat = torch.softmax(logits[1], -1)
    assert flat[flat >= (1 - top_p) / FIRST_TRY].sum() < top_p  # the flat row did take the fallback threshold


def test_top_p_one_samples_the_whole_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    torch.manual_seed(0)
    draws = top_p_sample(logits.expand(DRAWS, -1), 1.0)
    counts = torch.bincount(draws, minlength=4).double()
    assert chi_square_p_value(counts, torch.softmax(logits[0], -1).double()) > 1e-3


def test_tokens_ruled_out_with_minus_infinity_are_never_drawn():
    logits = torch.zeros(4, 3 * BLOCK)
    logits[:, :10] = float("-inf")  # as min_new_tokens does with the stop tokens
    draws = top_p_sample(logits, 0.9)
    assert bool((draws >= 10).all())
