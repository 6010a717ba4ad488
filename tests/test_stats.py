"""The statistics every table reports: the 95% t-interval, and its version over base models."""
import math
import random

import pytest

from conftest import load_script
from eval import error_bars, fmt_stat, group_means, mean_ci, n_undefined, spearman_ci, summarize, summarize_by, t975


def test_t_interval_closed_form():
    st = summarize([1.0, 2.0, 3.0])  # sd 1, n 3: half-width t(2) / sqrt(3)
    assert st["mean"] == 2.0 and st["per_seed"] == [1.0, 2.0, 3.0]
    assert st["ci95"] == pytest.approx([2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)], abs=1e-3)
    assert summarize([5.0])["ci95"] is None


def test_t_quantiles_are_the_tables():
    # 97.5% quantiles of Student's t (standard tables), inside the table and on the approximation past df = 30
    exact = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 31: 2.0395, 40: 2.0211, 60: 2.0003, 100: 1.9840,
             1000: 1.9623}
    for df, q in exact.items():  # the table's three decimals up to df = 30, the expansion's four past it
        assert t975(df) == pytest.approx(q, abs=5e-4 if df <= 30 else 5e-5), df
    for df in (0, -1):  # one value has no interval: not the table read from its end
        with pytest.raises(ValueError, match="df >= 1"):
            t975(df)


def test_interval_over_groups_not_over_repeated_seeds():
    # a base model's rate repeated for its two fine-tune seeds: two measurements, not four
    st = summarize_by([1.0, 1.0, 3.0, 3.0], [0, 0, 1, 1])
    assert st["mean"] == 2.0 and st["per_seed"] == [1.0, 1.0, 3.0, 3.0] and st["n_groups"] == 2
    assert st["ci95"] == pytest.approx([2 - t975(1), 2 + t975(1)])  # sd of (1, 3) is sqrt(2), n = 2
    assert summarize([1.0, 1.0, 3.0, 3.0])["ci95"][1] < st["ci95"][1]  # the naive interval is too narrow
    assert summarize_by([1.0, 1.0], [0, 0])["ci95"] is None  # one base: no interval
    with pytest.raises(ValueError, match="unbalanced"):
        summarize_by([1.0, 2.0, 3.0], [0, 0, 1])
    # a base with no defined seed is not one of the interval's groups, and n_groups says so
    st = summarize_by([1.0, 1.0, 3.0, 3.0, math.nan, math.nan], [0, 0, 1, 1, 2, 2])
    assert st["n_groups"] == 2 and st["ci95"] == pytest.approx([2 - t975(1), 2 + t975(1)])


def test_interval_over_groups_takes_each_groups_own_seeds_wherever_they_sit():
    # three bases' seeds interleaved: base means 1, 5, 3 -> mean 3, sd 2, n = 3 (the seeds of other positions, e.g.
    # the groups read in reverse, give the means 4, 2, 3 and an interval half as wide)
    st = summarize_by([1.0, 1.0, 5.0, 3.0, 5.0, 3.0], [0, 0, 1, 2, 1, 2])
    half = t975(2) * 2 / math.sqrt(3)
    assert st["mean"] == 3.0 and st["n_groups"] == 3 and st["ci95"] == pytest.approx([3 - half, 3 + half])


def test_a_label_per_value_or_an_error():
    # zip cut the longer list short: four seeds with two labels gave an interval over seeds 0 and 1 alone around the
    # mean of all four; two seeds with four balanced labels, one group (no interval) of a two-group design
    # (and unbalanced labels of another count: the count is what is wrong, not the balance)
    for values, groups in (([1.0, 2.0, 3.0, 4.0], [0, 1]), ([1.0, 2.0], [0, 0, 1, 1]), ([1.0, 2.0], [0, 0, 1])):
        with pytest.raises(ValueError, match=f"{len(values)} values but {len(groups)} group labels"):
            summarize_by(values, groups)
        with pytest.raises(ValueError, match=f"{len(values)} values but {len(groups)} group labels"):
            group_means(values, groups)
    # labels as a numpy array (an AttributeError on .count) or a tuple: as the list
    np = pytest.importorskip("numpy")
    values = [1.0, 1.0, 3.0, 3.0]
    assert summarize_by(values, np.array([0, 0, 1, 1])) == summarize_by(values, [0, 0, 1, 1])


def test_a_negative_scale_keeps_the_interval_in_order():
    assert mean_ci({"mean": 1.0, "ci95": [-0.5, 2.0]}, 1, scale=-1) == "-1.0 [-2.0, +0.5]"
    # no seed defined (every one nan): said, not "+nan" (em_clamp_finetune printed "+nan points")
    assert mean_ci(summarize([math.nan, math.nan]), 1, 100) == "n/a"
    assert mean_ci(summarize([math.nan]), show=lambda x: f"x{math.exp(x):.2f}") == "n/a"


def test_undefined_seed_is_left_out_not_propagated():
    # a seed with no valid answer has no misaligned rate (nan): the others still give a mean and an interval
    st = summarize([1.0, math.nan, 2.0, 3.0])
    assert st["mean"] == 2.0 and n_undefined(st) == 1 and set(st) == {"mean", "ci95", "per_seed"}  # the STAT schema
    assert st["ci95"] == pytest.approx(summarize([1.0, 2.0, 3.0])["ci95"])
    assert math.isnan(st["per_seed"][1]) and len(st["per_seed"]) == 4  # still pairs up seed by seed
    assert n_undefined(summarize([1.0, 2.0])) == 0
    inf = summarize([1.0, math.inf, 2.0])  # no spread to give: no interval (it was [nan, nan])
    assert inf["mean"] == math.inf and inf["ci95"] is None
    none = summarize([math.nan, math.nan])
    assert math.isnan(none["mean"]) and none["ci95"] is None and n_undefined(none) == 2
    # over groups: the undefined seed leaves its group's mean to its defined sibling
    by = summarize_by([1.0, math.nan, 3.0, 3.0], [0, 0, 1, 1])
    assert by["ci95"] == pytest.approx([2 - t975(1), 2 + t975(1)]) and n_undefined(by) == 1
    assert by["mean"] == 2.0  # the groups' (1 and 3), the interval's centre; over the seeds it was 7 / 3
    assert summarize_by([1.0, 1.0, 3.0, 3.0], [0, 0, 1, 1])["mean"] == 2.0
    assert "1 of 4 seeds undefined" in fmt_stat(by)


def test_fmt_stat_shows_half_the_intervals_width():
    # the tables' "m ± h": h is half the interval's width (t(2) / sqrt(3) = 2.484 for 1, 2, 3), not the width
    assert fmt_stat(summarize([1.0, 2.0, 3.0])) == "2.000 ± 2.484" and fmt_stat(summarize([5.0]), 1) == "5.0"


def test_mean_ci_scales_the_mean_and_both_ends_and_shows_the_mean_alone_without_an_interval():
    # the scripts' one formatter of a summarized number (points = 100 x a share)
    assert mean_ci({"mean": 0.5, "ci95": [0.25, 0.75]}, 2, 100) == "+50.00 [+25.00, +75.00]"
    assert mean_ci(summarize([0.1234])) == "+0.123"  # one seed: no interval
    assert mean_ci({"mean": 0.5, "ci95": [-0.25, 0.75]}, 4, sign="") == "0.5000 [-0.2500, 0.7500]"
    assert mean_ci({"mean": 0.0, "ci95": [-1.0, 1.0]}, show=lambda y: f"x{2 ** y:g}") == "x1 [x0.5, x2]"
    assert mean_ci({"mean": 0.0, "ci95": None}, show=lambda y: f"x{2 ** y:g}") == "x1"


def t_cdf_and_pdf(x, df, n=2000):
    """Student's t CDF at x > 0 (Simpson's rule on the density from 0) and the density at x: no scipy."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = lambda u: c * (1 + u * u / df) ** (-(df + 1) / 2)
    h = x / n
    area = pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, n))
    return 0.5 + area * h / 3, pdf(x)


def test_every_t_quantile_is_the_integral_of_the_density():
    # one Newton step from the returned value to where the CDF is 0.975: the table's 3 decimals up to df = 30, the
    # expansion within 1e-6 past it (the earlier 1.96 + 2.4 / df was 0.0021 low at df = 31: it fails here)
    for df in list(range(1, 61)) + [80, 100, 150, 300, 1000]:
        cdf, pdf = t_cdf_and_pdf(t975(df), df)
        exact = t975(df) - (cdf - 0.975) / pdf
        assert abs(t975(df) - exact) < (5.1e-4 if df <= 30 else 1e-6), (df, t975(df), exact)


def test_each_table_quantile_is_the_exact_one_rounded_to_three_decimals():
    # the table up to df = 30 is the quantile to three decimals: the tolerance above also let through the expansion
    # read one df early (2.0423 at df = 30) or a table entry off by one in its last digit where the rounding was close
    for df in range(1, 31):
        cdf, pdf = t_cdf_and_pdf(t975(df), df)
        assert t975(df) == round(t975(df) - (cdf - 0.975) / pdf, 3), df


def test_summarize_interval_covers_the_true_mean_95_percent_of_the_time():
    # normal data, 3000 simulated experiments per number of seeds: coverage 0.95 within 3.5 binomial sd's (0.0140)
    rng = random.Random(0)
    for n in (2, 3, 5, 10, 40):
        hits = 0
        for _ in range(3000):
            lo, hi = summarize([rng.gauss(1.0, 2.0) for _ in range(n)])["ci95"]
            hits += lo <= 1.0 <= hi
        assert abs(hits / 3000 - 0.95) < 0.014, (n, hits / 3000)


def test_paired_difference_interval_by_hand():
    # arm minus control per seed: d = 0.5, 1.5, 0.5, 2.5 -> mean 1.25, sd^2 = 2.75 / 3, half-width 3.182 sd / 2
    arm, control = [1.0, 2.5, 2.0, 4.5], [0.5, 1.0, 1.5, 2.0]
    st = summarize([a - b for a, b in zip(arm, control)])
    half = 3.182 * math.sqrt(2.75 / 3) / 2
    assert st["mean"] == pytest.approx(1.25) and st["ci95"] == pytest.approx([1.25 - half, 1.25 + half])
    assert st["ci95"][1] - st["ci95"][0] < summarize(arm)["ci95"][1] - summarize(arm)["ci95"][0]


def test_geometric_mean_interval_is_the_t_interval_of_the_logs_exponentiated():
    geo = load_script("em_code_vs_offdomain").geo
    ratios = [2.0, 3.0, 4.0, 6.0]  # geometric mean 12^(1/2) = 3.46; the interval on the logs, then exp
    logs = [math.log(r) for r in ratios]
    m = sum(logs) / 4
    half = 3.182 * math.sqrt(sum((x - m) ** 2 for x in logs) / 3) / 2
    assert (geo(logs) == f"{math.sqrt(12):.2f} [{math.exp(m - half):.2f}, {math.exp(m + half):.2f}]"
            == "3.46 [1.66, 7.24]")
    assert geo(logs[:1]) == "2.00"  # one seed: no interval
    # over the worlds' means: worlds 0 and 1 hold (2, 3) and (4, 6): the interval has n = 2
    w = [(math.log(2) + math.log(3)) / 2, (math.log(4) + math.log(6)) / 2]
    half = 12.706 * abs(w[1] - w[0]) / math.sqrt(2) / math.sqrt(2)
    assert geo(logs, [0, 0, 1, 1]) == f"3.46 [{math.exp(m - half):.2f}, {math.exp(m + half):.2f}]"


def test_seeds_all_equal_give_that_value_and_a_zero_width_interval():
    # sum([0.1] * 3) / 3 is 0.10000000000000002: a mean past every seed's value, with an interval of width 3e-17
    for x, n in ((0.1, 3), (0.943, 100), (-13.078058818590694, 3), (1272753.4004616179, 25)):
        st = summarize([x] * n)
        assert st["mean"] == x and st["ci95"] == [x, x]
    # a base's rate repeated once per fine-tune seed: its group's mean is that rate
    assert group_means([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], [0, 0, 0, 1, 1, 1]) == [0.1, 0.7]
    # in sorted group order, not the order groups first appear: per_seed lists of two arms pair up base by base
    assert group_means([1.0, 3.0, 2.0, 4.0], [1, 0, 1, 0]) == [3.5, 1.5]
    assert group_means([1.0, 2.0], ["b", "a"]) == [2.0, 1.0]


def test_spearman_interval_over_groups_resamples_whole_groups():
    # each base's pair three times over (its three models, say), a group's rows apart: resampling whole groups
    # draws what resampling the 6 distinct pairs draws (same generator, the same 6 indices per resample; a pair
    # repeated three times has a rank linear in its own, so the same rho), while resampling the 18 rows as if
    # independent gives a narrower interval
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    order = [0, 1, 2, 3, 4, 5] * 3
    xs, ys = [x[i] for i in order], [y[i] for i in order]
    grouped = spearman_ci(xs, ys, groups=[f"base{i}" for i in order], n_boot=2000)
    assert grouped["ci95"] == spearman_ci(x, y, n_boot=2000)["ci95"]
    assert grouped["rho"] == pytest.approx(spearman_ci(x, y)["rho"]) and grouped["groups"] == 6 and grouped["n"] == 18
    lo, hi = spearman_ci(xs, ys, n_boot=2000)["ci95"]
    assert hi - lo < grouped["ci95"][1] - grouped["ci95"][0]
    # the same groups listed in another order (the oracle's --seeds=(3,0,5,1,4,2)) draw the same interval
    y = [2.0, 1.0, 5.0, 3.0, 6.0, 4.0]
    first = spearman_ci(x * 2, y * 2, groups=list(range(6)) * 2, n_boot=2000)
    shuffled = [3, 0, 5, 1, 4, 2] * 2
    again = spearman_ci([x[i] for i in shuffled], [y[i] for i in shuffled], groups=shuffled, n_boot=2000)
    assert again["ci95"] == first["ci95"]


def test_spearman_of_a_nan_is_nan_and_an_interval_without_rank_order_is_none():
    """A nan was ranked as a tie above every number (np.unique merges them): (1, 2, 3, 4, nan) against (1, 2, 3, 4, 0)
    read 0.0. A constant side has no rank order in any resample: an IndexError from the empty percentile."""
    from eval import spearman
    assert math.isnan(spearman([1, 2, 3, 4, math.nan], [1, 2, 3, 4, 0]))
    assert math.isnan(spearman([1, 2, 3, 4, 0], [1, 2, 3, 4, math.nan]))  # on either side
    assert spearman([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(1.0)
    flat = spearman_ci([1, 1, 1, 1], [1, 2, 3, 4], n_boot=50)
    assert math.isnan(flat["rho"]) and flat["ci95"] is None and flat["n"] == 4
    one = spearman_ci([1, 2, 3], [1, 3, 2], n_boot=50, groups=[7, 7, 7])  # one base: every resample is it
    assert one["rho"] == pytest.approx(0.5) and one["ci95"] is None and one["groups"] == 1


def test_spearman_interval_of_pairs_with_a_nan_is_none_and_lengths_must_agree():
    # rho of a nan is nan, but the resamples that missed the nan pair gave an interval, [1.0, 1.0] here
    st = spearman_ci([1, 2, math.nan, 4, 5], [2, 3, 4, 5, 6], n_boot=200)
    assert math.isnan(st["rho"]) and st["ci95"] is None and st["n"] == 5
    st = spearman_ci([1, 2, 3, 4, 5, 6], [2, 3, 1, 5, math.nan, 6], n_boot=200, groups=[0, 0, 1, 1, 2, 2])
    assert math.isnan(st["rho"]) and st["ci95"] is None and st["groups"] == 3
    # fewer group labels than pairs left the last pairs out of every resample (an interval over the others); more,
    # or x and y of different lengths, were an IndexError or numpy's broadcast error
    for x, y, groups in (([1, 2, 3, 4], [1, 3, 2, 4], [0, 0, 1]), ([1, 2, 3, 4], [1, 3, 2, 4], [0, 0, 1, 1, 2]),
                         ([1, 2, 3, 4], [1, 3, 2], None), ([1, 2, 3], [1, 3, 2, 4], None)):
        with pytest.raises(ValueError, match="spearman_ci needs x, y \\(and groups\\) of one length"):
            spearman_ci(x, y, n_boot=50, groups=groups)


def test_error_bars_span_each_interval_and_draw_nothing_for_a_stat_without_one():
    # one seed has no interval: a bar of zero length (caps at the mean) read as an exact number; nan draws none
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stats = [summarize([1.0, 2.0, 4.0]), summarize([5.0])]
    (below, above), (lo, hi) = error_bars(stats, 100), stats[0]["ci95"]
    assert below[0] == pytest.approx(100 * (7 / 3 - lo)) and above[0] == pytest.approx(100 * (hi - 7 / 3))
    assert math.isnan(below[1]) and math.isnan(above[1])
    assert error_bars(iter([stats[1]])) is None  # none has one: no bars (matplotlib 3.7 warns of an all-nan yerr)
    fig, ax = plt.subplots()
    bars = ax.bar([0, 1], [s["mean"] for s in stats], yerr=error_bars(stats), capsize=2)
    plt.close(fig)
    segments = bars.errorbar.lines[2][0].get_segments()
    assert len(segments[0]) == 2 and len(segments[1]) == 0  # the first bar's line; none for the second


def test_error_bars_of_a_generator_are_those_of_its_list():
    # STATs given as a one-pass iterator (a generator): looking for an interval reads them up to the first that has
    # one, so the bars must come from a list of them (else the first bars go missing, or below and above differ)
    stats = [summarize([5.0]), summarize([1.0, 2.0, 4.0]), summarize([2.0, 3.0])]
    assert str(error_bars(iter(stats), 100)) == str(error_bars(stats, 100))  # (str: nan equals nan)
    assert len(error_bars(st for st in stats)[0]) == 3
