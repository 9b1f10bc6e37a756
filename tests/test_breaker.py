"""The engine's one retry policy and the per-provider circuit breaker, on a fake clock."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from vocable.engine.breaker import CLOSED, HALF_OPEN, OPEN, PASS, PROBE, Breaker, CircuitOpen, breaker_board
from vocable.engine.fallback import AllProvidersFailed, LiveProvider, ServedBy, fallback_stream
from vocable.engine.retry import RetryPolicy
from vocable.providers.errors import (
    AuthenticationError,
    CapacityExceeded,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("base", "cap", "attempt", "jitter", "expected"),
    [
        (0.25, 2.0, 0, 0.0, 0.125),  # half the base at the lowest jitter
        (0.25, 2.0, 0, 0.999999, 0.25),  # the whole base at the highest
        (0.25, 2.0, 1, 0.0, 0.25),  # doubles per attempt
        (0.25, 2.0, 3, 0.999999, 2.0),  # 0.25 * 8
        (0.25, 2.0, 6, 0.999999, 2.0),  # capped
        (0.25, 2.0, 6, 0.0, 1.0),  # capped, then jittered
        (5.0, 2.0, 0, 0.999999, 5.0),  # a base above the cap raises the cap
        (0.0, 2.0, 4, 0.5, 0.0),
    ],
)
def test_backoff_doubles_with_jitter_within_bounds(base, cap, attempt, jitter, expected):
    policy = RetryPolicy(retries=9, base_delay_s=base, max_delay_s=cap, jitter=lambda: jitter)
    assert policy.delay(attempt) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("attempt", range(8))
def test_real_jitter_stays_between_half_and_all_of_the_backoff(attempt):
    policy = RetryPolicy(retries=9, base_delay_s=0.1, max_delay_s=2.0)
    full = min(2.0, 0.1 * 2**attempt)
    delays = [policy.delay(attempt) for _ in range(200)]
    assert all(full / 2 <= d <= full for d in delays)
    assert max(delays) - min(delays) > full / 10, "jittered, not in lockstep"


@pytest.mark.parametrize(
    ("retry_after", "jitter", "expected"),
    [
        (1.5, 0.0, 1.5),  # longer than the backoff: honoured
        (0.01, 0.999999, 0.25),  # shorter: the backoff stands
        (60.0, 0.0, 2.0),  # longer than the cap: capped
        (0.0, 0.0, 0.125),  # "0": no extra wait
        (None, 0.0, 0.125),
    ],
)
def test_retry_after_is_honoured_and_capped(retry_after, jitter, expected):
    policy = RetryPolicy(retries=2, base_delay_s=0.25, max_delay_s=2.0, jitter=lambda: jitter)
    error = RateLimited("slow down", provider="x", retry_after_s=retry_after)
    assert policy.delay(0, error) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("error", "attempt", "retries", "allowed"),
    [
        (ServiceUnavailable("down"), 0, 2, True),
        (ServiceUnavailable("down"), 1, 2, True),
        (ServiceUnavailable("down"), 2, 2, False),  # the budget is spent
        (RateLimited("429"), 0, 0, False),  # no retries configured
        (AuthenticationError("401"), 0, 5, False),  # never retried
        (ProviderError("bug"), 0, 5, False),
        (RuntimeError("not a provider error"), 0, 5, False),
    ],
)
def test_what_may_be_retried(error, attempt, retries, allowed):
    assert RetryPolicy(retries=retries).allows(error, attempt) is allowed


# ------------------------------------------------------------------------------------------ breaker


def drive(breaker: Breaker, clock: FakeClock, step: str) -> str | None:
    """Apply one step of a script to a breaker: a request's outcome, or time passing."""
    if step.startswith("wait "):
        clock.advance(float(step.split()[1]))
        return None
    ticket = breaker.admit()
    if ticket is None:
        return "skip"
    if step == "fail":
        breaker.failed(ServiceUnavailable("down"), ticket)
    elif step == "ok":
        breaker.succeeded()
    elif step == "busy":
        breaker.failed(CapacityExceeded("queue full"), ticket)
    elif step == "cancel":
        breaker.release(ticket)
    return ticket


@pytest.mark.parametrize(
    ("script", "tickets", "state", "skips"),
    [
        # closed -> open after N failures in a row
        (["fail", "fail"], [PASS, PASS], CLOSED, 0),
        (["fail", "fail", "fail"], [PASS, PASS, PASS], OPEN, 0),
        (["fail", "ok", "fail", "fail"], [PASS] * 4, CLOSED, 0),  # a success starts the count over
        # skipped during the cooldown
        (["fail"] * 3 + ["ok", "ok"], [PASS] * 3 + ["skip", "skip"], OPEN, 2),
        (["fail"] * 3 + ["wait 29.9", "ok"], [PASS] * 3 + [None, "skip"], OPEN, 1),
        # half-open after it: one probe; success closes
        (["fail"] * 3 + ["wait 30"], [PASS] * 3 + [None], HALF_OPEN, 0),
        (["fail"] * 3 + ["wait 30", "ok", "ok"], [PASS] * 3 + [None, PROBE, PASS], CLOSED, 0),
        # ... failure re-opens for another cooldown
        (["fail"] * 3 + ["wait 30", "fail", "ok"], [PASS] * 3 + [None, PROBE, "skip"], OPEN, 1),
        (["fail"] * 3 + ["wait 30", "fail", "wait 30", "ok"], [PASS] * 3 + [None, PROBE, None, PROBE], CLOSED, 0),
        # a cancelled probe hands the probe to the next request
        (["fail"] * 3 + ["wait 30", "cancel", "ok"], [PASS] * 3 + [None, PROBE, PROBE], CLOSED, 0),
        # a local model's full queue counts neither way
        (["fail", "fail", "busy", "busy"], [PASS] * 4, CLOSED, 0),
        (["fail"] * 3 + ["wait 30", "busy", "ok"], [PASS] * 3 + [None, PROBE, PROBE], CLOSED, 0),
    ],
)
def test_breaker_transitions(script, tickets, state, skips):
    clock = FakeClock()
    breaker = Breaker(failures=3, cooldown_s=30, clock=clock)
    assert [drive(breaker, clock, step) for step in script] == tickets
    assert breaker.state == state and breaker.skips == skips


def test_only_one_probe_while_half_open():
    clock = FakeClock()
    breaker = Breaker(failures=1, cooldown_s=5, clock=clock)
    breaker.failed(ServiceUnavailable("down"), breaker.admit())
    clock.advance(5)
    assert breaker.admit() == PROBE
    assert breaker.admit() is None and breaker.admit() is None, "others skip while the probe runs"
    assert breaker.state == HALF_OPEN and breaker.skips == 2


def test_failures_zero_never_opens():
    breaker = Breaker(failures=0, clock=FakeClock())
    for _ in range(50):
        breaker.failed(ServiceUnavailable("down"), breaker.admit())
    assert breaker.state == CLOSED and breaker.admit() == PASS


def test_the_skip_error_names_the_failure_that_opened_the_breaker():
    breaker = Breaker(failures=1, clock=FakeClock())
    breaker.failed(AuthenticationError("credentials rejected (HTTP 401)", provider="groq"), breaker.admit())
    error = CircuitOpen(breaker, provider="groq")
    assert str(error) == "groq: skipped: circuit open after 1 failures in a row (the last: credentials rejected (HTTP 401))"
    assert error.code == "authentication_failed"


def test_the_board_names_every_provider_once():
    chains = {"llm": [LiveProvider("scripted", None, 1.0), LiveProvider("scripted", None, 1.0)],
              "tts": [LiveProvider("piper", None, 1.0)], "stt": [LiveProvider("whisper", None, 1.0)]}
    board = breaker_board(chains)
    assert {kind: list(named) for kind, named in board.items()} == {"llm": ["scripted", "scripted#2"], "tts": ["piper"]}
    assert board["llm"]["scripted#2"] is chains["llm"][1].breaker


# ----------------------------------------------------------------------------- in the fallback runner


class Vendor:
    """A provider whose next requests fail as scripted ("fail", "hang", "ok"), then answer "ok" for good."""

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.opened = 0

    async def stream(self):
        self.opened += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome == "fail":
            raise ServiceUnavailable("down", provider="vendor")
        if outcome == "hang":
            await asyncio.Event().wait()
        yield "vendor"


class Backup:
    async def stream(self):
        yield "backup"


async def ask(chain) -> tuple[list[str], ServedBy]:
    served = ServedBy()
    async with aclosing(fallback_stream("llm", chain, lambda p: p.stream(), served=served)) as stream:
        return [item async for item in stream], served


def breaker_chain(vendor: Vendor, clock: FakeClock, *, retries: int = 0, failures: int = 2, timeout_s: float = 5.0):
    policy = RetryPolicy(retries=retries, base_delay_s=0.0)
    return [LiveProvider("vendor", vendor, timeout_s, policy, Breaker(failures, 30, clock)),
            LiveProvider("backup", Backup(), timeout_s)]


async def test_an_open_breaker_skips_the_provider_until_its_probe():
    clock = FakeClock()
    vendor = Vendor("fail", "fail", "fail")
    chain = breaker_chain(vendor, clock)
    for _ in range(2):
        assert (await ask(chain))[0] == ["backup"]
    assert vendor.opened == 2 and chain[0].breaker.state == OPEN

    items, served = await ask(chain)
    assert items == ["backup"] and vendor.opened == 2, "skipped: not even opened"
    assert isinstance(served.failures[0][1], CircuitOpen) and chain[0].breaker.skips == 1

    clock.advance(30)
    assert (await ask(chain))[0] == ["backup"] and vendor.opened == 3, "the probe failed"
    assert chain[0].breaker.state == OPEN
    clock.advance(30)
    assert (await ask(chain))[0] == ["vendor"] and vendor.opened == 4, "the probe succeeded"
    assert chain[0].breaker.state == CLOSED


async def test_a_request_stops_retrying_once_the_breaker_opens():
    clock = FakeClock()
    vendor = Vendor("fail", "fail", "fail", "fail")
    chain = breaker_chain(vendor, clock, retries=5, failures=2)
    assert (await ask(chain))[0] == ["backup"]
    assert vendor.opened == 2, "five retries allowed, but the breaker opened after two failed attempts"


async def test_retries_are_made_while_the_breaker_is_closed():
    vendor = Vendor("fail", "fail")
    chain = breaker_chain(vendor, FakeClock(), retries=2, failures=3)
    assert (await ask(chain))[0] == ["vendor"] and vendor.opened == 3
    assert chain[0].breaker.state == CLOSED


async def test_the_probe_is_not_retried():
    clock = FakeClock()
    vendor = Vendor("fail", "fail", "fail")
    chain = breaker_chain(vendor, clock, retries=3, failures=2)
    await ask(chain)
    clock.advance(30)
    assert (await ask(chain))[0] == ["backup"] and vendor.opened == 3, "one probe, no retry of it"


async def test_every_provider_open_fails_at_once_with_the_cause():
    clock = FakeClock()
    vendor = Vendor("fail")
    chain = [LiveProvider("vendor", vendor, 5.0, breaker=Breaker(1, 30, clock))]
    with pytest.raises(AllProvidersFailed):
        await ask(chain)
    with pytest.raises(AllProvidersFailed, match="skipped: circuit open") as info:
        await ask(chain)
    assert vendor.opened == 1 and info.value.code == "service_unavailable"


async def test_a_cancelled_probe_lets_the_next_request_probe():
    clock = FakeClock()
    vendor = Vendor("fail", "hang")
    chain = breaker_chain(vendor, clock, failures=1)
    await ask(chain)
    clock.advance(30)
    task = asyncio.create_task(ask(chain))
    while vendor.opened < 2:  # the probe is in flight
        await asyncio.sleep(0)
    assert (await ask(chain))[0] == ["backup"] and vendor.opened == 2, "skipped while the probe runs"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chain[0].breaker.state == HALF_OPEN
    assert (await ask(chain))[0] == ["vendor"] and vendor.opened == 3


# ------------------------------------------------------------------------------------------- config


def test_retry_and_breaker_keys_beside_provider_reach_the_engine_and_config():
    from vocable.config.schema import config_schema
    from vocable.plugins.manager import PluginHost
    from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_engine

    engine = scripted_engine(llm=[
        {"provider": "scripted", "retries": 2, "retry_delay_s": 0.1, "breaker": {"failures": 5, "cooldown_s": 2}},
        {"provider": "scripted"},
    ])
    first, second = engine.runtime.llm
    assert (first.retry.retries, first.retry.base_delay_s) == (2, 0.1)
    assert (first.breaker.failures, first.breaker.cooldown_s) == (5, 2)
    assert (second.breaker.failures, second.breaker.cooldown_s, second.retry.retries) == (3, 30, 0)
    shown = engine.redacted_config()["pipeline"]["llm"][0]
    assert shown["retry_delay_s"] == 0.1 and shown["breaker"] == {"failures": 5, "cooldown_s": 2}
    llm = config_schema(PluginHost(autoload=False, plugins=SCRIPTED_PLUGINS))["$defs"]["llm__scripted"]["properties"]
    assert {"timeout_s", "retries", "retry_delay_s", "breaker"} <= set(llm)


def test_a_misspelt_breaker_key_is_an_error_with_its_path():
    from vocable.config import ConfigError
    from vocable.testing.scripted import scripted_engine

    with pytest.raises(ConfigError) as info:
        scripted_engine(llm=[{"provider": "scripted", "breaker": {"failure": 3}}, {"provider": "scripted"}])
    assert "pipeline.llm[0].breaker.failure" in dict(info.value.errors)


def test_max_retries_in_a_hosted_provider_is_refused_naming_retries():
    pytest.importorskip("groq")
    from vocable import Engine
    from vocable.config import ConfigError
    from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

    config = scripted_config(llm={"provider": "groq", "api_key": "sk-test-123456", "max_retries": 2})
    with pytest.raises(ConfigError) as info:
        Engine.from_dict(config, autoload=False, plugins=[*SCRIPTED_PLUGINS, "vocable.providers.groq"])
    message = dict(info.value.errors)["pipeline.llm"]
    assert "max_retries is no longer a provider setting" in message and "retries: N" in message
