"""The barrier without a cluster: hosts that return, raise, hang or die (tests/fakes.py)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import ray.exceptions

from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.core.records import HostRecord, Stage
from ray_tpu_profile.driver.barrier import Barrier, DoneFutures, completed_in_slices, result_watching_stop
from ray_tpu_profile.errors import RunStopped
from support.fakes import HANG, FakeHost, Said, named


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def barrier(handles: dict, timeout_s: float = 30.0, check_stop=lambda: None, entered=None) -> Barrier:
    records = [HostRecord(host=Host(name=n, node_id=f"node-{n}", node_ip="127.0.0.1", chips=4)) for n in handles]
    return Barrier(
        records,
        named(handles),
        Said(),
        timeout_s,
        check_stop,
        on_stage=(entered.append if entered is not None else lambda stage: None),
    )


def test_every_host_is_called_and_the_stage_returns_when_all_have_answered(pool):
    release = threading.Event()
    hosts = barrier(
        {"h0": FakeHost(pool, warmup=lambda: 1.5), "h1": FakeHost(pool, warmup=lambda: release.wait(10) and 2.5)},
        entered=(entered := []),
    )
    threading.Timer(0.2, release.set).start()
    results = hosts.run(Stage.WARMUP, lambda h: h.warmup(), lambda record, value: f"{value} s")
    assert results == {"h0": 1.5, "h1": 2.5}  # the slow host was waited for
    assert entered == [Stage.WARMUP]
    assert [line for line in hosts.progress.lines if line[0] == "ok"] == [
        ("ok", "warmup", "h0", "1.5 s"),
        ("ok", "warmup", "h1", "2.5 s"),
    ]
    assert all(r.healthy and r.error is None for r in hosts.records)


def test_a_host_that_raises_fails_alone_and_is_not_called_again(pool):
    def broken():
        raise ValueError("no KV cache space\nsecond line")

    h0, h1 = FakeHost(pool, load=broken), FakeHost(pool, load=lambda: "loaded")
    hosts = barrier({"h0": h0, "h1": h1})
    assert hosts.run(Stage.LOAD, lambda h: h.load()) == {"h1": "loaded"}
    r0, r1 = hosts.records
    assert (r0.status, r0.stage, r0.error) == ("failed", Stage.LOAD, "ValueError: no KV cache space")
    assert ("failed", "load", "h0", "ValueError: no KV cache space") in hosts.progress.lines
    assert r1.healthy
    hosts.run(Stage.WARMUP, lambda h: h.warmup())
    assert [m for m, _ in h0.calls] == ["load"] and [m for m, _ in h1.calls] == ["load", "warmup"]


def test_a_host_whose_actor_died_is_named_so(pool):
    def die():
        raise ray.exceptions.ActorDiedError()

    hosts = barrier({"h0": FakeHost(pool, warmup=die), "h1": FakeHost(pool)})
    hosts.run(Stage.WARMUP, lambda h: h.warmup())
    assert hosts.records[0].error.startswith("actor process died") and hosts.records[1].healthy


def test_a_host_that_outlasts_the_timeout_is_failed_and_killed_and_the_others_deliver(pool):
    stuck, fine = FakeHost(pool, profile=HANG), FakeHost(pool, profile=lambda: "traced")
    hosts = barrier({"h0": stuck, "h1": fine}, timeout_s=0.3)
    assert hosts.run(Stage.CAPTURE, lambda h: h.profile()) == {"h1": "traced"}
    assert hosts.records[0].error == "timed out after 0.3 s (--timeout-s)" and hosts.records[0].stage == Stage.CAPTURE
    assert stuck.killed.is_set() and not fine.killed.is_set()


def test_a_stage_with_on_error_hands_it_errors_and_timeouts_and_fails_no_host(pool):
    """The summaries stage: a host that dies or hangs summarising has its traces in already."""

    def die():
        raise ray.exceptions.ActorDiedError()

    dead, stuck, fine = FakeHost(pool, summarise=die), FakeHost(pool, summarise=HANG), FakeHost(pool)
    hosts = barrier({"h0": dead, "h1": stuck, "h2": fine}, timeout_s=0.3)
    lost: dict[str, str] = {}
    results = hosts.run(
        Stage.SUMMARIES, lambda h: h.summarise(), on_error=lambda r, why: lost.setdefault(r.host.name, f"lost: {why}")
    )
    assert results == {"h2": "ok"}
    assert lost["h0"].startswith("lost: actor process died")
    assert lost["h1"] == "lost: timed out after 0.3 s (--timeout-s)"
    assert all(r.healthy and r.error is None for r in hosts.records)
    assert stuck.killed.is_set()  # a hung host is still killed at the deadline
    said = {line[2]: line for line in hosts.progress.lines if line[0] == "ok"}
    assert said["h0"][3] == lost["h0"] and said["h1"][3] == lost["h1"]


def test_a_stop_signal_ends_a_stage_whose_hosts_hang(pool):
    stop = threading.Event()

    def check_stop():
        if stop.is_set():
            raise RunStopped("SIGTERM")

    hosts = barrier({"h0": FakeHost(pool, warmup=HANG)}, timeout_s=3600, check_stop=check_stop)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(RunStopped):
        hosts.run(Stage.WARMUP, lambda h: h.warmup())
    hosts.handles["h0"].kill()
    assert hosts.records[0].status == "pending"  # the run, not the barrier, records a stop


def test_fail_marks_the_record_and_says_it(pool):
    hosts = barrier({"h0": FakeHost(pool)})
    hosts.fail(hosts.records[0], Stage.VERIFY, "empty xplane")
    assert hosts.healthy() == [] and hosts.records[0].stage == Stage.VERIFY
    assert hosts.progress.lines == [("failed", "verify", "h0", "empty xplane")]


def test_waiting_in_slices(pool):
    done = pool.submit(lambda: 7)
    assert result_watching_stop(done, 1.0, lambda: None) == 7
    never = pool.submit(threading.Event().wait, 1.0)
    with pytest.raises(TimeoutError, match="timed out after 0.2 s"):
        result_watching_stop(never, 0.2, lambda: None)
    looks = []
    assert list(completed_in_slices([pool.submit(threading.Event().wait, 0.7)], 5.0, lambda: looks.append(1)))
    assert len(looks) >= 2  # looked at the stop flag while waiting, not only at the end


class CountingFuture(Future):
    """A Future that counts the callbacks and waiters put on it."""

    def __init__(self) -> None:
        super().__init__()
        self.installs = 0

    def add_done_callback(self, fn) -> None:
        self.installs += 1
        super().add_done_callback(fn)


def test_done_futures_hands_each_future_over_once_and_puts_one_callback_on_each():
    """A round over N hosts costs one callback per future, not one waiter per pending
    future per completion (O(N^2) with concurrent.futures.wait)."""
    futures = [CountingFuture() for _ in range(64)]
    futures[0].set_result(0)  # completed before it is watched: handed over too
    done = DoneFutures(futures)
    assert done.wait(0) == [futures[0]]
    assert done.wait(0.01) == []  # nothing more yet: waits, then nothing
    seen = []
    for i, future in enumerate(futures[1:], 1):
        future.set_result(i)
        seen += done.wait(1.0)
    assert seen == futures[1:] and all(f.installs == 1 for f in futures)


def test_a_hosts_error_without_a_message_is_named_by_where_it_was_raised():
    from ray_tpu_profile.driver.barrier import describe_error

    # From a Ray task: the frames of the process it was raised in, as Ray carries them.
    remote = ray.exceptions.RayTaskError(
        "HostActor.load",
        'Traceback (most recent call last):\n  File "/venv/ray/_private/worker.py", line 10, in main\n'
        '  File "/venv/tpu_inference/worker/tpu_worker.py", line 433, in init_device\nAttributeError',
        AttributeError(),  # what a half-patched library raises: no message
    )
    expected = "AttributeError (no message), raised at tpu_worker.py:433 in init_device"
    assert describe_error(remote) == expected
    # What ray.get raises: the dual class (RayTaskError and AttributeError), whose
    # attributes are the cause's, so it has no traceback_str (CI: 77866f9 raised here).
    dual = remote.as_instanceof_cause()
    assert isinstance(dual, AttributeError) and type(dual) is not ray.exceptions.RayTaskError
    assert describe_error(dual) == expected
    assert describe_error(TimeoutError()) == "TimeoutError:"  # the driver's own: its type says it
    assert describe_error(ValueError("bad\nmore")) == "ValueError: bad"  # a message: its first line
    with_message = ray.exceptions.RayTaskError("HostActor.load", "Traceback ...", KeyError("engine"))
    assert describe_error(with_message.as_instanceof_cause()) == "KeyError: 'engine'"
