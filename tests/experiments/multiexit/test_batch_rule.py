"""experiments.multiexit.real_data_exit (notebook 02, offline): why the report's batch rule never fired."""

import pytest

from vitstudy import multiexit
from vitstudy.experiments.multiexit import real_data_exit


def test_batch_rule_exit_rate_falls_with_batch_size(digits_study):
    """Under the batch rule, bigger batches exit less often (the report's null result)."""
    threshold = multiexit.max_softmax(digits_study.logits("separate", (1,))[:, 0]).median().item()
    rates = real_data_exit.batch_rule_exit_rates(digits_study, "separate", (1,), [threshold], [1, 4, 64])
    shares = rates.sort_values("batch_size")["batch_exited_pct"].tolist()
    assert shares[0] >= shares[1] >= shares[2] and shares[0] > shares[2]


def test_batch_rule_arithmetic():
    """Max-softmax floor 1/C, and the confident share a batch of b needs to leave half the time: 0.5 ** (1/b)."""
    floor = real_data_exit.chance_floor_table((10, 1000), threshold=0.01).set_index("classes")
    assert floor.loc[10, "exit_guaranteed_per_image"] and not floor.loc[1000, "exit_guaranteed_per_image"]
    needed = real_data_exit.required_confident_share([256]).iloc[0]
    assert needed["confident_share_needed_pct"] == pytest.approx(100 * 0.5 ** (1 / 256))


def test_batch_rule_plot_dashes_the_independence_model(digits_study):
    """One solid line per threshold for the measured rate, one dashed for p ** b."""
    rates = real_data_exit.batch_rule_exit_rates(digits_study, "separate", (1,), [0.5, 0.9], [1, 4, 16])
    ax = real_data_exit.batch_rule_plot(rates).axes[0]
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "-", "--"]
