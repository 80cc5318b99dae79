"""Sessions and sign-in links expire on the server, and wrong guesses are forgotten in time."""

from __future__ import annotations

from listener.app.dashboard.sessions import FailedAttempts, IssuedSecrets


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_on_the_server_when_its_lifetime_is_over() -> None:
    clock = Clock()
    sessions = IssuedSecrets(lifetime_s=60, most=10, clock=clock)
    session = sessions.issue()
    clock.now += 59
    assert sessions.holds(session)
    clock.now += 2
    assert not sessions.holds(session)


def test_a_link_is_good_once_and_the_oldest_go_when_too_many_are_held() -> None:
    links = IssuedSecrets(lifetime_s=600, most=2, clock=Clock())
    first, second, third = links.issue(), links.issue(), links.issue()
    assert not links.holds(first)  # pushed out by the third
    assert links.redeem(second) and not links.redeem(second)
    assert links.holds(third) and not links.holds("made-up")


def test_wrong_guesses_throttle_an_address_for_the_window_then_are_forgotten() -> None:
    clock = Clock()
    failed = FailedAttempts(most=3, window_s=60, clock=clock)
    for _ in range(3):
        assert not failed.throttled("10.0.0.1")
        failed.record("10.0.0.1")
        clock.now += 10
    assert failed.throttled("10.0.0.1") and not failed.throttled("10.0.0.2")
    assert failed.wait_s("10.0.0.1") == 30  # the first guess leaves the window 60 s after it
    clock.now += 31
    assert not failed.throttled("10.0.0.1")
