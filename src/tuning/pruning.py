"""Pruning: which trials to stop early, and only in their first epochs (FIRST_PRUNE_EPOCH on)."""

from __future__ import annotations

import optuna

# The last epoch at which a trial may be pruned. Trials differ in epochs, so their cosine schedules
# differ in length: at epoch 4 a 12-epoch trial is at 77% of its peak learning rate and a 30-epoch
# one at 96%, but at epoch 9 at 15% and 80%, and rungs that late stop the long trials that end
# best (bench/README.md, Pruning).
LAST_PRUNE_EPOCH = 4
# The percentile pruners judge from this epoch on, once STARTUP_TRIALS trials have completed. At
# 3944e8d, judging from epoch 1 against the one complete trial, a new study's first (the default,
# built to be good early), pruned 98 of 100 trials, 80 of them after epoch 1: a trial had to
# match the default's first epochs, whatever it would reach by its last (bench/README.md, The
# tuned model).
FIRST_PRUNE_EPOCH = 3
STARTUP_TRIALS = 3


class EarlyOnly(optuna.pruners.BasePruner):
    """Ask `inner` only up to `last_step`; a trial past it runs to the end of its schedule."""

    def __init__(self, inner: optuna.pruners.BasePruner, last_step: int) -> None:
        self.inner, self.last_step = inner, last_step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last_step and self.inner.prune(study, trial)


def pruner(name: str) -> optuna.pruners.BasePruner:
    """Steps are epochs trained (see EpochReport), and nothing is pruned after LAST_PRUNE_EPOCH.
    Decile: at each epoch from FIRST_PRUNE_EPOCH, stop a trial whose best so far is below the top
    tenth of the complete trials at that epoch (after STARTUP_TRIALS complete ones). The bar is set
    by the winners so far, so it rises as TPE closes in on good regions. Quartile: the same with
    the top quarter. Median: the same with the median. Successive halving: after 1 and 4 epochs
    only the best quarter of all trials that got there go on; that history includes TPE's
    random start-up trials, so once TPE samples well nearly every trial is promoted. Hyperband:
    halving's rungs, hedged over brackets that prune later (wrapped, it no longer shows TPE its
    brackets: Optuna looks for a HyperbandPruner on the study). bench/bench_tune.py measures
    them against no pruning."""
    inner = {
        "decile": lambda: percentile(10.0),
        "quartile": lambda: percentile(25.0),
        "median": lambda: percentile(50.0),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=4
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=LAST_PRUNE_EPOCH, reduction_factor=4
        ),
        "none": optuna.pruners.NopPruner,
    }[name]()
    return EarlyOnly(inner, LAST_PRUNE_EPOCH)


def percentile(top: float) -> optuna.pruners.PercentilePruner:
    """Keep the trials in the `top` percent of the complete ones at the same epoch."""
    return optuna.pruners.PercentilePruner(
        top, n_startup_trials=STARTUP_TRIALS, n_warmup_steps=FIRST_PRUNE_EPOCH
    )
