import pandas as pd

from search.pareto import pareto_mask


def test_pareto_front_two_objectives():
    df = pd.DataFrame({"pgd": [0.5, 0.4, 0.3, 0.45, None], "clean": [0.7, 0.9, 0.95, 0.6, 0.99]})
    mask = pareto_mask(df, [("pgd", "max"), ("clean", "max")])
    # (0.45, 0.6) is dominated by (0.5, 0.7); the row with a missing value is never on the front
    assert list(mask) == [True, True, True, False, False]


def test_pareto_front_respects_min_mode():
    df = pd.DataFrame({"loss": [1.0, 2.0, 0.5], "acc": [0.8, 0.9, 0.7]})
    assert list(pareto_mask(df, [("loss", "min"), ("acc", "max")])) == [True, True, True]
    assert list(pareto_mask(df, [("loss", "max"), ("acc", "max")])) == [False, True, False]
