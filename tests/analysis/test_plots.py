"""The density figures say when a row rests on fewer seeds than the others."""

from lotterypools.analysis import plots


def _legend_of(monkeypatch, draw, table):
    seen = {}

    def keep(fig, path):
        seen["labels"] = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]

    monkeypatch.setattr(plots, "_save", keep)
    draw(table)
    return seen["labels"]


TABLE = {
    "ticket": [{"density": 1.0, "mean": 91.0, "std": 0.5, "n": 3, "ci_low": None, "ci_high": None},
               {"density": 0.5, "mean": 90.0, "std": 0.5, "n": 3, "ci_low": None, "ci_high": None}],
    "sms_greedy": [{"density": 0.5, "mean": 92.0, "std": 0.1, "n": 2, "ci_low": 91.5, "ci_high": 92.5}],
}


def test_a_row_with_fewer_seeds_is_named_so_in_both_density_figures(monkeypatch, tmp_path):
    labels = _legend_of(monkeypatch, lambda t: plots.plot_mean_std_vs_density(t, "t", "acc", tmp_path / "a.png"), TABLE)
    assert labels[0] == plots.method_label("ticket")
    assert labels[1] == plots.method_label("sms_greedy") + " (2 of 3 seeds)"
    gains = {"sms_greedy": TABLE["sms_greedy"]}
    labels = _legend_of(monkeypatch, lambda t: plots.plot_gain_intervals(t, "t", tmp_path / "g.png"), gains)
    assert labels == [plots.method_label("sms_greedy")]  # alone in its figure: nothing to be fewer than


def test_rows_without_counts_keep_their_plain_names():
    assert plots.series_label("ticket", [{"density": 1.0}], 3) == plots.method_label("ticket")


def test_a_collapsed_method_is_named_below_the_floor_instead_of_stretching_the_gain_axis(monkeypatch, tmp_path):
    seen = {}

    def keep(fig, path):
        ax = fig.axes[0]
        seen["bottom"], seen["top"] = ax.get_ylim()
        seen["texts"] = [t.get_text() for t in ax.texts]

    monkeypatch.setattr(plots, "_save", keep)
    table = {"interpolate_ema": [{"density": 0.5, "mean": -0.4, "ci_low": -0.6, "ci_high": -0.2},
                                 {"density": 0.0024, "mean": -40.8, "ci_low": -61.0, "ci_high": 12.0}],
             "Lottery_pools": [{"density": 0.5, "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}]}
    plots.plot_gain_intervals(table, "t", tmp_path / "g.png")
    assert seen["bottom"] == -3.0
    assert seen["top"] == 0.2 + 3.0  # the collapsed row's interval (to +12) does not set it
    assert seen["texts"] == [f"off scale: {plots.method_label('interpolate_ema')} -40.8 at 0.24%"]
    table["interpolate_ema"].pop()  # nothing below the floor: the axis is matplotlib's own, no note
    plots.plot_gain_intervals(table, "t", tmp_path / "g.png")
    assert seen["bottom"] > -3.0 and seen["texts"] == []
