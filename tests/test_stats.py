"""The statistics every table reports: the 95% t-interval, and its version over base models."""
import math

import pytest

from eval import fmt_stat, mean_ci, n_undefined, summarize, summarize_by, t975


def test_t_interval_closed_form():
    st = summarize([1.0, 2.0, 3.0])  # sd 1, n 3: half-width t(2) / sqrt(3)
    assert st["mean"] == 2.0 and st["per_seed"] == [1.0, 2.0, 3.0]
    assert st["ci95"] == pytest.approx([2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)], abs=1e-3)
    assert summarize([5.0])["ci95"] is None


def test_t_quantiles_are_the_tables():
    # 97.5% quantiles of Student's t (standard tables), inside the table and on the approximation past df = 30
    exact = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 40: 2.021, 60: 2.000, 100: 1.984, 1000: 1.962}
    for df, q in exact.items():  # the table's three decimals up to df = 30, the approximation within 0.003 past it
        assert t975(df) == pytest.approx(q, abs=5e-4 if df <= 30 else 3e-3), df


def test_interval_over_groups_not_over_repeated_seeds():
    # a base model's rate repeated for its two fine-tune seeds: two measurements, not four
    st = summarize_by([1.0, 1.0, 3.0, 3.0], [0, 0, 1, 1])
    assert st["mean"] == 2.0 and st["per_seed"] == [1.0, 1.0, 3.0, 3.0] and st["n_groups"] == 2
    assert st["ci95"] == pytest.approx([2 - t975(1), 2 + t975(1)])  # sd of (1, 3) is sqrt(2), n = 2
    assert summarize([1.0, 1.0, 3.0, 3.0])["ci95"][1] < st["ci95"][1]  # the naive interval is too narrow
    assert summarize_by([1.0, 1.0], [0, 0])["ci95"] is None  # one base: no interval
    with pytest.raises(ValueError, match="unbalanced"):
        summarize_by([1.0, 2.0, 3.0], [0, 0, 1])


def test_undefined_seed_is_left_out_not_propagated():
    # a seed with no valid answer has no misaligned rate (nan): the others still give a mean and an interval
    st = summarize([1.0, math.nan, 2.0, 3.0])
    assert st["mean"] == 2.0 and n_undefined(st) == 1 and set(st) == {"mean", "ci95", "per_seed"}  # the STAT schema
    assert st["ci95"] == pytest.approx(summarize([1.0, 2.0, 3.0])["ci95"])
    assert math.isnan(st["per_seed"][1]) and len(st["per_seed"]) == 4  # still pairs up seed by seed
    assert n_undefined(summarize([1.0, 2.0])) == 0
    none = summarize([math.nan, math.nan])
    assert math.isnan(none["mean"]) and none["ci95"] is None and n_undefined(none) == 2
    # over groups: the undefined seed leaves its group's mean to its defined sibling
    by = summarize_by([1.0, math.nan, 3.0, 3.0], [0, 0, 1, 1])
    assert by["ci95"] == pytest.approx([2 - t975(1), 2 + t975(1)]) and n_undefined(by) == 1
    assert "1 of 4 seeds undefined" in fmt_stat(by)


def test_mean_ci_scales_the_mean_and_both_ends_and_shows_the_mean_alone_without_an_interval():
    # the scripts' one formatter of a summarized number (points = 100 x a share)
    assert mean_ci({"mean": 0.5, "ci95": [0.25, 0.75]}, 2, 100) == "+50.00 [+25.00, +75.00]"
    assert mean_ci(summarize([0.1234])) == "+0.123"  # one seed: no interval
    assert mean_ci({"mean": 0.5, "ci95": [-0.25, 0.75]}, 4, sign="") == "0.5000 [-0.2500, 0.7500]"
    assert mean_ci({"mean": 0.0, "ci95": [-1.0, 1.0]}, show=lambda y: f"x{2 ** y:g}") == "x1 [x0.5, x2]"
    assert mean_ci({"mean": 0.0, "ci95": None}, show=lambda y: f"x{2 ** y:g}") == "x1"
