"""Categorical features: a column of text (or booleans) one-hot encoded over its vocabulary.

A categorical feature named in `features` is one input column whose values are
strings. The transform (transforms.step.preprocessing) gives it `slots(M)`
columns, M = max_categories: one per value of its vocabulary (the M most
frequent values of the training rows, most frequent first), then `OTHER` (a
value outside the vocabulary: rarer at training, or unseen), then `MISSING` (a
missing value, with --missing impute). The width is fixed when the transform's
graph is built, before the vocabulary is known, so a column with fewer than M
values has slots that no row fills; reports drop them (`used_columns`).

The space the fit runs in is the numeric features (scaled) then, feature by
feature in `features` order, the categorical ones' slots: `Layout` keeps the
two lists and names the columns of that space.
"""

from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

OTHER, MISSING = "__other__", "__missing__"
# A categorical value as the raw rows carry it when it is missing (--missing impute):
# the transform (transforms.step.preprocessing, which has the same constant) puts it
# in the MISSING slot, and it never enters a vocabulary.
MISSING_VALUE = MISSING


def slots(max_categories: int) -> int:
    """The columns of one categorical feature: its M values, OTHER, MISSING."""
    return max_categories + 2


class Layout(NamedTuple):
    """Which features are numbers and which are categories, and the columns they make.

    numeric:        the D_num numeric feature names (vector columns' elements
                    included), in `features` order: the raw matrix's columns.
    categorical:    the C categorical feature names, in `features` order: the raw
                    categories' columns.
    max_categories: M, each categorical feature's vocabulary size at most.
    """

    numeric: Tuple[str, ...]
    categorical: Tuple[str, ...]
    max_categories: int

    @classmethod
    def of(cls, features: Sequence[str], categorical: Sequence[str], max_categories: int):
        """Split `features` by `categorical` (every name of which must be a feature)."""
        unknown = [c for c in categorical if c not in features]
        if unknown:
            raise ValueError(f"categorical features {unknown} are not in features {features}")
        chosen = set(categorical)
        return cls(
            tuple(f for f in features if f not in chosen),
            tuple(f for f in features if f in chosen),
            int(max_categories),
        )

    @property
    def width(self) -> int:
        """D, the columns of the space the fit runs in."""
        return len(self.numeric) + len(self.categorical) * slots(self.max_categories)

    def columns(self, vocabularies: Sequence[Sequence[str]]) -> List[str]:
        """The D column names: the numeric features, then per categorical feature
        FEATURE=VALUE for each slot (`vocabularies[j]`: its values, most frequent
        first; a slot past them is FEATURE=#i, which no training row fills)."""
        names = list(self.numeric)
        for feature, values in zip(self.categorical, vocabularies):
            names += [
                f"{feature}={values[i]}" if i < len(values) else f"{feature}=#{i}"
                for i in range(self.max_categories)
            ]
            names += [f"{feature}={OTHER}", f"{feature}={MISSING}"]
        return names

    def used_columns(self, vocabularies: Sequence[Sequence[str]], impute: bool) -> np.ndarray:
        """int64 [D']: the columns worth reporting: every numeric one, and each categorical
        feature's vocabulary slots, OTHER, and MISSING when missing values are imputed."""
        keep = list(range(len(self.numeric)))
        start, width = len(self.numeric), slots(self.max_categories)
        for values in vocabularies:
            keep += range(start, start + len(values))
            keep.append(start + self.max_categories)
            if impute:
                keep.append(start + self.max_categories + 1)
            start += width
        return np.asarray(keep, np.int64)


def as_text(value) -> str:
    """A categorical value as the vocabulary holds it: text as it is, bytes decoded as
    UTF-8, booleans as "true"/"false" (Arrow's and BigQuery's spelling), anything
    else by `str`."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)
