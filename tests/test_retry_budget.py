import threading

from hypothesis import given
from hypothesis import strategies as st

from buttress._retry._budget import RetryBudget


class Clock:  # a clock whose monotonic() the test moves
    t = 0.0

    def monotonic(self):
        return self.t


@given(st.lists(st.tuples(st.sampled_from(["req", "retry"]), st.floats(0, 3)), max_size=300))
def test_retries_never_exceed_ratio_plus_floor_in_any_window(ops):
    clock = Clock()
    b = RetryBudget(ratio=0.2, min_per_second=1, window=10.0, clock=clock)
    reqs, rets = [], []
    for op, dt in ops:
        clock.t += dt
        if op == "req":
            b.record_request()
            reqs.append(clock.t)
        elif b.try_retry():
            rets.append(clock.t)
            edge = clock.t - 10.0
            n_req = sum(1 for r in reqs if r > edge)
            n_ret = sum(1 for r in rets if r > edge)
            assert n_ret <= 0.2 * n_req + 10


def test_eight_threads_share_one_budget():
    clock = Clock()
    b = RetryBudget(ratio=0.2, min_per_second=1, window=10.0, clock=clock)
    granted = []

    def work():
        for _ in range(100):
            b.record_request()
            granted.append(sum(b.try_retry() for _ in range(3)))

    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(granted) <= 0.2 * 800 + 10
    assert b.refused == 8 * 300 - sum(granted)
