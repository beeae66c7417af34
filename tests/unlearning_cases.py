"""Test helper: the data every unlearning-method test runs on, and the methods this package ships.

The data make the forget set's information distinct: the two forgotten users have their own profile
and like every movie, while everyone else likes the even-numbered ones."""

from __future__ import annotations

from core.ml.data import Dataset, PreparedData, SampleConfig, prepare
from core.ml.unlearning import METHODS
from tests.conftest import synthetic_dataset

# other tests may register helper methods; the contracts are for the ones this package ships
BUILT_IN = sorted(name for name, cls in METHODS.items() if cls.__module__.startswith("core.ml.unlearning."))
FORGET_USERS = ["u0", "u1"]


def distinct_forget_data() -> PreparedData:
    """12 users, 20 items, 8 ratings each, history of 3; ``FORGET_USERS`` rate everything 5."""
    dataset = synthetic_dataset(users=12, items=20, per_user=8)
    interactions, users = dataset.interactions.copy(), dataset.users.copy()
    interactions.loc[interactions["user_id"].isin(FORGET_USERS), "rating"] = 5.0
    users.loc[users["user_id"].isin(FORGET_USERS), ["age", "gender", "occupation"]] = ["61", "M", "pilot"]
    return prepare(Dataset(interactions, dataset.items, users), SampleConfig(history_len=3))
