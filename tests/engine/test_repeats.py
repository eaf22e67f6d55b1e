"""The repeat rule of 8.3.5.2 k) / 8.4.5.2 l)."""

from cardeval.engine.repeats import Run, summarize


def test_drops_fastest_and_slowest_and_takes_the_middle():
    r = summarize([Run(10), Run(12), Run(11), Run(30), Run(9)], lower_is_faster=True)
    assert r.valid and r.chapter8 == 11 and r.used == 3
    assert r.mean_trimmed == (10 + 11 + 12) / 3


def test_rates_are_faster_when_higher():
    r = summarize([Run(100), Run(90), Run(95), Run(50), Run(99)], lower_is_faster=False)
    assert r.chapter8 == 95  # drops 100 (fastest) and 50 (slowest)


def test_one_nonconverged_run_is_the_dropped_slowest():
    r = summarize([Run(10), Run(11), Run(12), Run(13), Run(5, converged=False)], lower_is_faster=True)
    # valid 10, 11, 12, 13: drop the fastest (10) and the non-converged one; middle of 11, 12, 13
    assert r.valid and r.chapter8 == 12 and r.used == 3


def test_fewer_than_three_valid_runs_take_the_fastest():
    r = summarize([Run(10), Run(8), Run(1, converged=False)], lower_is_faster=True)
    assert r.valid and r.chapter8 == 8 and r.used == 1


def test_two_nonconverged_runs_invalidate():
    r = summarize([Run(10), Run(8), Run(9), Run(1, False), Run(2, False)], lower_is_faster=True)
    assert not r.valid and r.chapter8 is None and "2 runs did not converge" in r.reason


def test_even_count_takes_the_median_of_the_rest():
    r = summarize([Run(1), Run(2), Run(3), Run(4), Run(5), Run(6)], lower_is_faster=True)
    assert r.chapter8 == 3.5 and r.mean_trimmed == 3.5


def test_no_runs():
    assert not summarize([], lower_is_faster=True).valid
