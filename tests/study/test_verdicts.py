"""fairl.study.verdicts: runs are compared only on the same test pairs; one run's replicates
are computed once and shared by every comparison on its test set."""

import numpy as np
import pytest

from fairl.stats import STARC, paired_bootstrap
from fairl.study import verdicts


def _rewards(rng, prompt_ids, gt, shift=0.0):
    n = len(prompt_ids)
    return verdicts.TestRewards([0, 1, 2], gt[0] + shift + rng.standard_normal((3, n)),
                       gt[1] + rng.standard_normal((3, n)), gt[0], gt[1], prompt_ids)


def test_runs_on_other_pairs_with_the_same_prompts_are_refused():
    rng = np.random.default_rng(0)
    prompt_ids = np.repeat(np.arange(20), 3)
    gt = (rng.standard_normal(60) + 1, rng.standard_normal(60))
    other_gt = (gt[0] + 0.5, gt[1])  # the same prompts, other pairs (e.g. SIR at another m)
    a, b = _rewards(rng, prompt_ids, gt), _rewards(rng, prompt_ids, other_gt)
    with pytest.raises(ValueError, match="different test pairs"):
        verdicts.Bootstraps(n_boot=50).contrast(STARC, [("a", a), ("b", b)], [1.0, -1.0])


def test_shared_draws_give_the_paired_bootstrap_of_each_comparison():
    rng = np.random.default_rng(1)
    prompt_ids = np.repeat(np.arange(25), 2)
    gt = (rng.standard_normal(50) + 1, rng.standard_normal(50))
    reference, a, b = (_rewards(rng, prompt_ids, gt, shift) for shift in (0.0, 0.3, 0.6))
    bootstraps = verdicts.Bootstraps(n_boot=300, seed=4)
    for run in (a, b):  # the reference's replicates come from the memo the second time
        shared = bootstraps.contrast(STARC, [("run", run) if run is a else ("other", run),
                                             ("reference", reference)], [1.0, -1.0])
        alone = paired_bootstrap(STARC, (run.R_T, run.R_NT), (reference.R_T, reference.R_NT),
                                 prompt_ids, gt, n_boot=300, rng=np.random.default_rng(4))
        assert shared == alone
