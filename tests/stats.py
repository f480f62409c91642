"""Statistics for the sampling tests: the exact nucleus of a distribution, and a chi-square test."""

import torch


def exact_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus distribution by the definition: sort everything, keep the top tokens up to top_p."""
    ordered, order = probs.sort(descending=True)
    nucleus = torch.zeros_like(probs)
    keep = (ordered.cumsum(0) - ordered) < top_p
    nucleus[order[keep]] = ordered[keep]
    return nucleus / nucleus.sum()


def untied_top_p(probs: torch.Tensor, near: float) -> float:
    """A top_p at or just above `near` whose nucleus ends between two clearly different probabilities.

    In a flat tail many tokens tie, and which of the tied ones a sort keeps at the edge is arbitrary
    (it changed with the model a few training steps give): the nucleus is then not one set.
    """
    ordered, _ = probs.sort(descending=True)
    before = ordered.cumsum(0) - ordered  # the mass ahead of each token
    for first_out in range(max(1, int((before < near).sum())), ordered.shape[0]):
        if ordered[first_out - 1] > 1.01 * ordered[first_out]:
            return float(before[first_out - 1] + ordered[first_out - 1] / 2)
    return 1.0


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of observed counts against exact probabilities (bins expecting < 5 merged)."""
    expected = probs * counts.sum()
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum(0, keepdim=True)])
    expected = torch.cat([expected[~small], expected[small].sum(0, keepdim=True)])
    keep = expected > 0
    chi2 = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    if dof == 0:  # a single possible outcome: nothing to test beyond it being the only one drawn
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(chi2 / 2)))


def binned(counts: torch.Tensor, probs: torch.Tensor, bins: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts and probabilities summed over groups of tokens of about equal total probability
    (most likely first), for distributions too flat to expect 5 draws of any single token."""
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    group = (before * bins).long().clamp(max=bins - 1)
    return (
        torch.zeros(bins, dtype=counts.dtype).index_add(0, group, counts[order]),
        torch.zeros(bins, dtype=probs.dtype).index_add(0, group, probs[order]),
    )
