"""The frames of one run: the scaled training split, the forget users, and the disjoint evaluation samples
(pure pandas, decided by the seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.unlearning.config import BenchConfig, BenchmarkError, BenchSizes
from core.ml.data import PreparedData, select_forget


@dataclass(frozen=True)
class DataSizes:
    """How many users and samples each frame of a run holds."""

    users: int
    forget_users: int
    train: int
    forget: int
    retain: int
    valid: int
    test: int
    unseen: int


@dataclass
class BenchData:
    """Every frame one run needs; ``forget`` and ``retain`` partition ``train``."""

    train: pd.DataFrame
    forget: pd.DataFrame
    retain: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    unseen: pd.DataFrame
    forget_users: list[str]

    def sizes(self) -> DataSizes:
        return DataSizes(
            users=int(self.train["user_id"].nunique()),
            forget_users=len(self.forget_users),
            train=len(self.train),
            forget=len(self.forget),
            retain=len(self.retain),
            valid=len(self.valid),
            test=len(self.test),
            unseen=len(self.unseen),
        )


def scale_train(train: pd.DataFrame, sizes: BenchSizes, seed: int) -> pd.DataFrame:
    """Keep ``sizes.users`` random users and each one's ``sizes.train_per_user`` most recent samples."""
    if sizes.users is not None:
        users = sorted(train["user_id"].unique())
        if sizes.users < len(users):
            keep = np.random.default_rng(seed).choice(users, size=sizes.users, replace=False)
            train = train[train["user_id"].isin(set(keep))]
    if sizes.train_per_user is not None:
        ordered = train.sort_values(["timestamp", "item_id"], kind="stable")
        train = ordered.groupby("user_id", sort=False).tail(sizes.train_per_user)
    return train.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def choose_forget_users(train: pd.DataFrame, config: BenchConfig) -> list[str]:
    """``forget_users`` users (or ``forget_fraction`` of them, at least one), drawn with the seed."""
    users = sorted(train["user_id"].unique())
    wanted = config.forget_users or max(1, round(config.forget_fraction * len(users)))
    if wanted >= len(users):
        raise BenchmarkError(f"cannot forget {wanted} of {len(users)} users: nothing would be retained")
    rng = np.random.default_rng(config.seed + 1)  # not the stream that picked the users
    return sorted(str(u) for u in rng.choice(users, size=wanted, replace=False))


def label_matched_sample(pool: pd.DataFrame, like: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows of ``pool`` with as many of each label as ``like`` has (fewer where the pool runs short).

    The membership attack reads per-sample loss, and a model's loss depends on the label mix (a model
    leaning "Yes" has low loss on positives); matching the mix keeps that bias out of the attack's AUC."""
    parts = [
        pool[pool["label"] == label].sample(
            n=min(count, int((pool["label"] == label).sum())), random_state=seed
        )
        for label, count in sorted(like["label"].value_counts().items())
    ]
    return pd.concat(parts)


def bench_data(data: PreparedData, config: BenchConfig) -> BenchData:
    """Scale the splits, pick the forget users, and draw the disjoint test and unseen samples."""
    return frames_for(scale_train(data.split("train"), config.sizes, config.seed), data, config)


def frames_for(train: pd.DataFrame, data: PreparedData, config: BenchConfig) -> BenchData:
    """The frames of one forget set drawn (with ``config``'s seed and size) from an already scaled
    ``train``: several forget sets from one parent share its ``train``."""
    forget_users = choose_forget_users(train, config)
    forget, retain = select_forget(train, users=forget_users)
    valid, test_all = (data.split(s) for s in ("valid", "test"))
    valid_outside = valid[~valid["user_id"].isin(forget_users)]
    test_outside = test_all[~test_all["user_id"].isin(forget_users)]
    test = test_outside
    if config.sizes.test_samples is not None and config.sizes.test_samples < len(test):
        test = test.sample(n=config.sizes.test_samples, random_state=config.seed)
    pool = pd.concat([valid_outside, test_outside.drop(index=test.index)])
    if pool.empty:
        raise BenchmarkError("no valid/test samples outside the forget set to serve as unseen data")
    unseen = label_matched_sample(pool, forget, config.seed)
    return BenchData(
        train=train,
        forget=forget,
        retain=retain,
        valid=valid,
        test=test.reset_index(drop=True),
        unseen=unseen.reset_index(drop=True),
        forget_users=forget_users,
    )
