"""DiCMoR's missing schedule (`batch-schedule`): the published code's batch counts, and no row left
without a modality when the store lacks one the batch keeps."""

from __future__ import annotations

import numpy as np
import pytest
from cmarr.shared.modalities import MODALITIES
from cmarr.train.missing import BatchScheduleSampler


def _published_counts(n_batches: int, mr: float) -> tuple[int, int]:
    """DICMOR.py's loop, counting which batches call the model with num_modal 1 and 2."""
    miss_2 = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
    miss_1 = [0.1, 0.2, 0.3, 0.2, 0.1, 0.0, 0.0]
    denom = np.round(n_batches / 10) * 10
    miss_two = miss_one = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(n_batches):
            if miss_two / denom < miss_2[int(mr * 10 - 1)]:
                miss_two += 1
            elif miss_one / denom < miss_1[int(mr * 10 - 1)]:
                miss_one += 1
    return miss_two, miss_one


@pytest.mark.parametrize("mr", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
def test_the_batch_schedule_counts_batches_as_the_published_code(mr):
    sampler = BatchScheduleSampler(mr)
    for n in range(6, 300):
        assert sampler.counts(n) == _published_counts(n, mr), n
    assert _published_counts(5, mr) == (0, 0) and sampler.counts(5)[0] > 0  # the published 0/0: no missingness


def test_the_batch_schedule_leaves_no_row_without_a_modality():
    """A batch keeping video only gives a row without a face one modality it has."""
    present = {"text": np.ones(40, bool), "audio": np.ones(40, bool), "video": np.arange(40) % 2 == 0}
    batches = [np.arange(k, k + 4) for k in range(0, 40, 4)]
    draws = BatchScheduleSampler(0.7).draw(present, batches, np.random.default_rng(0))
    for b, given in zip(batches, draws):
        count = sum(given[m].astype(int) for m in MODALITIES)
        assert (count >= 1).all() and (count <= 1).all()  # rate 0.7: every batch keeps one modality
        for m in MODALITIES:
            assert not (given[m] & ~present[m][b]).any()
