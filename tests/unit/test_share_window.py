"""The share reader's acquisition window (dnpfs/backends/kafka/_window.py):
a handle that streams gets more records a ShareFetch, a worker one."""

from dnpfs.backends.kafka._window import CAP_BYTES, MAX_RECORDS, QUICK, SLOW, Window


def stream(window: Window, records: int, nbytes: int, gap: float, start: float = 0.0):
    sizes, now = [], start
    for _ in range(records):
        sizes.append(window.asked(now))
        window.given(now, nbytes)
        now += gap
    return sizes


def test_a_streaming_handle_doubles_its_window():
    assert stream(Window(), 6, 100, QUICK / 2) == [1, 2, 4, 8, 16, 32]


def test_a_worker_that_works_on_each_record_gets_one_at_a_time():
    assert stream(Window(), 5, 100, 0.2) == [1, 1, 1, 1, 1]


def test_one_slow_ask_brings_it_back_to_one():
    window = Window()
    stream(window, 5, 100, QUICK / 2)
    assert window.size == 16
    now = 100.0
    window.given(now, 100)
    assert window.asked(now + 0.2) == 1


def test_a_stream_that_waits_a_few_ms_once_loses_half_its_window_not_all():
    window = Window()
    stream(window, 5, 100, QUICK / 2)
    assert window.size == 16
    now = 100.0
    window.given(now, 100)
    assert window.asked(now + (QUICK + SLOW) / 2) == 8
    window.given(now + 1, 100)
    assert window.asked(now + 1 + QUICK / 2) == 16


def test_a_worker_with_jobs_of_a_few_ms_comes_down_to_one():
    window = Window()
    stream(window, 5, 100, QUICK / 2)  # 16, the last record given at 2 * QUICK
    job = (QUICK + SLOW) / 2
    assert stream(window, 5, 100, job, start=2 * QUICK + job) == [8, 4, 2, 1, 1]


def test_asking_again_without_a_record_keeps_the_window():
    window = Window()
    stream(window, 4, 100, QUICK / 2)  # sizes 1, 2, 4, 8
    window.given(10.0, 100)
    assert window.asked(10.001) == 16
    # it waited for a record (no record handed out since): no change, and no reset
    assert window.asked(12.0) == 16


def test_the_window_holds_at_most_cap_bytes_of_records():
    big = 1 << 20
    sizes = stream(Window(), 12, big, 0)
    assert max(sizes) == CAP_BYTES // big
    assert stream(Window(), 20, 1, 0)[-1] == MAX_RECORDS
    # a record larger than the cap: one at a time
    assert stream(Window(), 5, CAP_BYTES * 2, 0) == [1, 1, 1, 1, 1]


def test_acknowledgements_of_consecutive_records_go_as_one_batch():
    from dnpfs.backends.kafka._aiokafka.share_requests import ACCEPT, RELEASE, ack_batches

    acks = [(5, ACCEPT), (3, ACCEPT), (4, ACCEPT), (6, RELEASE), (7, RELEASE), (9, RELEASE)]
    assert ack_batches(acks) == [(3, 5, [ACCEPT], {}), (6, 7, [RELEASE], {}),
                                 (9, 9, [RELEASE], {})]
