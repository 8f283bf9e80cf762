"""Length-sorted batches under a padded-size budget.

The plan is a function of the whole corpus (and the encoder's budget), never of what a resumed run
has left to do: a resumed run, a retried dask shard and a single-process run form exactly the same
batches, so a staged part keeps its batch's name (`batch_loop.batch_tag`) and every utterance gets
bit-identical features. Padding is masked or kept out of each item's normalisation (see the
encoders), but a batch's size and padding still change float rounding.
"""

from __future__ import annotations

import numpy as np


def plan_batches(costs: np.ndarray, budget: int) -> list[np.ndarray]:
    """Indices grouped so that (longest item in the batch) x (batch size) <= budget; every item,
    however long, gets a batch. Items of zero cost (no input) share batches of their own."""
    order = np.argsort(costs, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        c = max(int(costs[i]), 1)
        if current and max(longest, c) * (len(current) + 1) > budget:
            batches.append(np.array(current))
            current, longest = [], 0
        current.append(int(i))
        longest = max(longest, c)
    if current:
        batches.append(np.array(current))
    return batches


def padding_fraction(costs: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of the padded batch area that is padding (how well sorting works)."""
    padded = sum(costs[b].max() * len(b) for b in batches if len(b))
    return 1.0 - costs.sum() / padded if padded else 0.0
