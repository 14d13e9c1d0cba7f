"""Pruning: which trials to stop early, and only in their first epochs (see LAST_PRUNE_EPOCH)."""

from __future__ import annotations

import optuna

# The last epoch at which a trial may be pruned. Trials differ in epochs, so their cosine schedules
# differ in length: at epoch 4 a 12-epoch trial is at 77% of its peak learning rate and a 30-epoch
# one at 96%, but at epoch 9 at 15% and 80%, and rungs that late stop the long trials that end
# best (bench/README.md, Pruning).
LAST_PRUNE_EPOCH = 4


class EarlyOnly(optuna.pruners.BasePruner):
    """Ask `inner` only up to `last_step`; a trial past it runs to the end of its schedule."""

    def __init__(self, inner: optuna.pruners.BasePruner, last_step: int) -> None:
        self.inner, self.last_step = inner, last_step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last_step and self.inner.prune(study, trial)


def pruner(name: str) -> optuna.pruners.BasePruner:
    """Steps are epochs trained (see EpochReport), and nothing is pruned after LAST_PRUNE_EPOCH.
    Decile: at each epoch, stop a trial whose best so far is below the top tenth of the complete
    trials at that epoch (after one complete trial). The bar is set by the winners so far, so it
    rises as TPE closes in on good regions. Quartile: the same with the top quarter. Median: the
    same with the median, after 3 complete trials. Successive halving: after 1 and 4 epochs
    only the best quarter of all trials that got there go on; that history includes TPE's
    random start-up trials, so once TPE samples well nearly every trial is promoted. Hyperband:
    halving's rungs, hedged over brackets that prune later (wrapped, it no longer shows TPE its
    brackets: Optuna looks for a HyperbandPruner on the study). bench/bench_tune.py measures
    them against no pruning."""
    inner = {
        "decile": lambda: optuna.pruners.PercentilePruner(10.0, n_startup_trials=1),
        "quartile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=1),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=4
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=LAST_PRUNE_EPOCH, reduction_factor=4
        ),
        "none": optuna.pruners.NopPruner,
    }[name]()
    return EarlyOnly(inner, LAST_PRUNE_EPOCH)
