"""Benchmark: a fleet of uncoordinated broker Lambda instances sharing one pool of KVS channels.

A discrete-event simulation on a virtual clock (a heap of events; no threads, sockets or sleeping)
that drives the broker's real decision code, :mod:`broker.scheduling`, in every instance, against
KVS modelled by the emulator's own limiter (:class:`local.kvs_emulator.limits.RateLimiter`).

The model (each figure is a field of :class:`FleetModel`):

- Sessions arrive as a Poisson process. ``POST /start`` fetches the browser's credentials (one
  credential request) and holds its instance 10 ms more; after the client's delay (microphone and
  offer, uniform 0.3-0.8 s from the answer to ``/start``) the offer fetches the agent's credentials
  (a second request) and holds its instance for ``InvokeAgentRuntime`` (uniform 0.7-1.3 s).
- Lambda: a request takes the most recently used idle instance (an assumption: AWS does not document
  the order), else a new one, which serves after a cold start (uniform 250-400 ms) with a fresh
  :class:`~broker.scheduling.ChannelScheduler` (empty limiters, its own seeded random generator).
  An instance idle for 5 minutes is reclaimed. One instance serves one request at a time.
- Endpoints (``--endpoints``): ``manifest``, what the deployed stack does, gives a new instance every
  channel's HTTPS endpoint in the pool manifest that the stack writes at deploy time
  (:mod:`broker.pool_manifest`); reading it is one ``GetSecretValue`` added to the cold start
  (``FleetModel.manifest_read``: 30 ms assumed, an in-region call on a fresh connection for under
  64 KB; the account allows 10,000 a second, so the report gives the peak reads per second). Only a
  channel failure would drop an endpoint, and this model has none, so no
  ``GetSignalingChannelEndpoint`` call is made. ``lazy``, for pools named by ARNs or a prefix: an
  instance starts with no endpoint.
- KVS: a call reaches KVS one one-way latency after it is sent (10 ms plus uniform 0-2 ms jitter,
  drawn per direction) and is answered one latency later. Each channel's ``GetIceServerConfig`` limit
  (5 per sliding second, admitted calls counted) and the account's ``GetSignalingChannelEndpoint``
  limit (300 per sliding second) decide at arrival; a refusal is ``ClientLimitExceededException``,
  handed to :meth:`~broker.scheduling.CredentialRequest.on_answer` exactly as ``IceBroker`` does.
  An instance's first call to a channel whose endpoint it lacks first looks it up (one more round
  trip, holding the call's slot as :class:`broker.kvs.KvsSignaling` does), cached for its life.

Per scenario the report gives the ``GetIceServerConfig`` throttles per served credential request
beside :func:`broker.sizing.predicted_throttle_rate` (endpoint-lookup throttles are counted apart),
the latency the pool added to credential requests beyond one KVS round trip (waits, failovers and
endpoint lookups), the fleet's size and its endpoint lookups per second. A scenario whose fleet
grows without bound (a throttle storm: see ``FleetModel.divergence_factor``) is stopped and reported
with ``diverged_at_s``; it meets no target. ``--endpoints lazy --endpoint-tps 0`` lifts the
account's endpoint limit, to tell its effect from the per-channel limit's. The targets, judged at
the recommended pool for each rate: at most 0.01 throttles per served call, and simulated over
predicted throttles within [0.5, 2]. Scenarios (rate x pool size, at today's
:func:`~broker.sizing.channel_count` and at :func:`~broker.sizing.recommended_channel_count`) run
in two worker processes::

    python -m bench.fleet --json
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from broker.config import BrokerConfig
from broker.exceptions import BrokerError, KvsError
from broker.scheduling import Channel, ChannelScheduler, CredentialRequest, Wait
from broker.sizing import channel_count, predicted_throttle_rate, recommended_channel_count
from local.kvs_emulator.limits import RateLimiter

THROTTLED = "ClientLimitExceededException"
CHANNEL_ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:channel/fleet-{}/1"
CALLS_PER_SESSION = 2
THROTTLE_TARGET = 0.01
PREDICTION_RANGE = (0.5, 2.0)
DEFAULT_RATES = (10.0, 100.0, 1000.0)
WORKERS = 2
EndpointMode = Literal["manifest", "lazy"]
ENDPOINT_MODES: tuple[EndpointMode, ...] = get_args(EndpointMode)


@dataclass(frozen=True)
class FleetModel:
    """The simulated world: the fleet's timings and KVS's limits (seconds unless named otherwise)."""

    endpoints: EndpointMode = "manifest"
    """Where a new instance's channel endpoints come from: the pool manifest, or lookups as needed."""
    manifest_read: float = 0.030
    """Reading the pool manifest (``GetSecretValue``), added to the cold start in ``manifest`` mode."""
    one_way_latency: float = 0.010
    latency_jitter: float = 0.002
    cold_start: tuple[float, float] = (0.25, 0.40)
    idle_reclaim: float = 300.0
    client_delay: tuple[float, float] = (0.3, 0.8)
    start_hold: float = 0.010
    invoke: tuple[float, float] = (0.7, 1.3)
    ice_tps_per_channel: int = 5
    endpoint_tps_per_account: int = 300
    window: float = 1.0
    divergence_factor: float = 3.0
    """Stop a scenario whose live instances exceed this many times ``sessions_per_sec x 1.5 s``
    (about three times the fleet a stable run needs): its load then grows without bound."""

    def __post_init__(self) -> None:
        if self.endpoints not in ENDPOINT_MODES:
            raise ValueError(f"endpoints must be one of {', '.join(ENDPOINT_MODES)}, got {self.endpoints!r}")


@dataclass(frozen=True)
class Scenario:
    """One run: a session rate over a pool of a given size."""

    sizing: str
    sessions_per_sec: float
    channels: int
    duration: float
    seed: int


class _Instance:
    """One broker Lambda instance: its own scheduler and endpoint cache.

    ``manifest`` holds the endpoints read at cold start: one set shared by every instance, as
    nothing in this model drops an endpoint. ``looked_up`` holds those the instance looked up.
    """

    __slots__ = ("idle_since", "looked_up", "manifest", "scheduler")

    def __init__(self, scheduler: ChannelScheduler, manifest: frozenset[str]) -> None:
        self.scheduler = scheduler
        self.manifest = manifest
        self.looked_up: set[str] = set()
        self.idle_since = 0.0

    def knows_endpoint(self, arn: str) -> bool:
        """Whether a call to ``arn`` can go straight to ``GetIceServerConfig``."""
        return arn in self.manifest or arn in self.looked_up


_Work = tuple[bool, float, float]
"""A request for an instance: ``(is_offer, client_delay, invoke)``, drawn when its session arrives."""


class _Fetch:
    """One credential request in flight on one instance."""

    __slots__ = ("admitted", "channel", "instance", "request", "sent_at", "started_at", "work")
    channel: Channel  # set by each Send, before any event needs it

    def __init__(self, instance: _Instance, work: _Work, request: CredentialRequest, now: float) -> None:
        self.instance = instance
        self.work = work
        self.request = request
        self.started_at = now
        self.sent_at = now
        self.admitted = False


class _Diverged(Exception):
    """The fleet grows without bound: the scenario is stopped (see ``FleetModel.divergence_factor``)."""


def percentile_ms(ordered: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted ``ordered`` (seconds) in milliseconds."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return round(ordered[index] * 1000, 2)


class FleetSimulation:
    """Runs one :class:`Scenario` to completion on a virtual clock.

    Args:
        scenario: The rate, pool size, duration and seed.
        model: The world's timings and limits.
        config: The broker settings every instance uses (limits, cooldowns, the bounded wait).
    """

    def __init__(self, scenario: Scenario, model: FleetModel, config: BrokerConfig) -> None:
        self.scenario = scenario
        self.model = model
        self.config = config
        self.arns = [CHANNEL_ARN.format(k) for k in range(scenario.channels)]
        self._manifest = frozenset(self.arns) if model.endpoints == "manifest" else frozenset()
        self._cold_start_extra = model.manifest_read if model.endpoints == "manifest" else 0.0
        tag = f"{scenario.seed}:{scenario.sessions_per_sec}"
        # The workload depends on the rate and seed only, so both pool sizes see the same sessions.
        self._workload = random.Random(f"{tag}:sessions")
        self._network = random.Random(f"{tag}:{scenario.channels}:network")
        self._platform = random.Random(f"{tag}:{scenario.channels}:lambda")
        self._instance_seeds = itertools.count()
        self._seed_tag = f"{tag}:{scenario.channels}"
        self._events: list[tuple[float, int, Callable[[float, Any], None], Any]] = []
        self._order = itertools.count()
        self._channel_limits: dict[str, RateLimiter] = {}
        self._endpoint_limit = RateLimiter(model.endpoint_tps_per_account, model.window)
        self._idle: deque[_Instance] = deque()
        self._live = 0
        self._busy = 0
        self._max_live = max(100, int(model.divergence_factor * scenario.sessions_per_sec * 1.5))
        self._progress_every = scenario.duration / 10
        self._progress_at = self._progress_every
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.added: list[float] = []
        self.lookups_per_second: Counter[int] = Counter()
        self.cold_starts_per_second: Counter[int] = Counter()
        self.peak_busy = 0
        self.peak_live = 0
        self.diverged_at: float | None = None

    # ----------------------------------------------------------------- the event loop

    def _at(self, when: float, handler: Callable[[float, Any], None], subject: Any) -> None:
        heapq.heappush(self._events, (when, next(self._order), handler, subject))

    def _latency(self) -> float:
        return self.model.one_way_latency + self._network.random() * self.model.latency_jitter

    def run(self) -> dict[str, Any]:
        """Simulate the sessions of ``duration`` seconds, then until every one of them is over."""
        started = time.perf_counter()
        self._at(self._workload.expovariate(self.scenario.sessions_per_sec), self._session, None)
        events = 0
        try:
            while self._events:
                now, _, handler, subject = heapq.heappop(self._events)
                handler(now, subject)
                events += 1
        except _Diverged:
            pass
        return self._report(events, time.perf_counter() - started)

    # ----------------------------------------------------------------- sessions and Lambda

    def _session(self, now: float, _: None) -> None:
        self.counts["sessions"] += 1
        if now >= self._progress_at:
            self._progress_at += self._progress_every
            print(
                f"[fleet]   {self.scenario.sessions_per_sec:g}/s x {self.scenario.channels} channels: t={now:.0f} s, "
                f"{self._live} instances, {self.counts['ice_throttles']} throttles",
                file=sys.stderr,
                flush=True,
            )
        following = now + self._workload.expovariate(self.scenario.sessions_per_sec)
        if following < self.scenario.duration:
            self._at(following, self._session, None)
        client_delay = self._workload.uniform(*self.model.client_delay)
        invoke = self._workload.uniform(*self.model.invoke)
        self._dispatch(now, (False, client_delay, invoke))

    def _dispatch(self, now: float, work: _Work) -> None:
        """Give a request to the most recently used idle instance, or to a new one."""
        self.counts["credential_requests"] += 1
        reclaim_before = now - self.model.idle_reclaim
        while self._idle and self._idle[0].idle_since <= reclaim_before:
            self._idle.popleft()
            self._live -= 1
        self._busy += 1
        self.peak_busy = max(self.peak_busy, self._busy)
        if self._idle:
            self._begin(now, (self._idle.pop(), work))
            return
        self.counts["cold_starts"] += 1
        self.cold_starts_per_second[int(now)] += 1
        self._live += 1
        self.peak_live = max(self.peak_live, self._live)
        if self._live > self._max_live:
            self.diverged_at = now
            raise _Diverged
        rng = random.Random(f"{self._seed_tag}:instance:{next(self._instance_seeds)}")
        instance = _Instance(ChannelScheduler.from_config(self.config, channel_arns=self.arns, rng=rng), self._manifest)
        cold_start = self._platform.uniform(*self.model.cold_start) + self._cold_start_extra
        self._at(now + cold_start, self._begin, (instance, work))

    def _begin(self, now: float, job: tuple[_Instance, _Work]) -> None:
        instance, work = job
        request = CredentialRequest(instance.scheduler, now, max_wait_seconds=self.config.max_wait_seconds)
        fetch = _Fetch(instance, work, request, now)
        self._step(now, fetch)

    def _free(self, now: float, instance: _Instance) -> None:
        self._busy -= 1
        instance.idle_since = now
        self._idle.append(instance)

    # ----------------------------------------------------------------- one credential request

    def _step(self, now: float, fetch: _Fetch) -> None:
        try:
            step = fetch.request.next_step(now)
        except BrokerError as exc:
            self._failed(now, fetch, exc)
            return
        if isinstance(step, Wait):
            self._at(step.until, self._step, fetch)
            return
        channel = step.channel
        fetch.channel = channel
        fetch.sent_at = now
        if fetch.instance.knows_endpoint(channel.arn):
            self._at(now + self._latency(), self._ice_arrives, fetch)
        else:
            self._at(now + self._latency(), self._lookup_arrives, fetch)

    def _lookup_arrives(self, now: float, fetch: _Fetch) -> None:
        self.counts["endpoint_lookups"] += 1
        self.lookups_per_second[int(now)] += 1
        fetch.admitted = self._endpoint_limit.has_room(now)
        if fetch.admitted:
            self._endpoint_limit.record(now)
        else:
            self.counts["endpoint_throttles"] += 1
        self._at(now + self._latency(), self._lookup_answered, fetch)

    def _lookup_answered(self, now: float, fetch: _Fetch) -> None:
        if fetch.admitted:
            fetch.instance.looked_up.add(fetch.channel.arn)
            fetch.sent_at = now  # the GetIceServerConfig call leaves now
            self._at(now + self._latency(), self._ice_arrives, fetch)
            return
        self._refused(now, fetch)

    def _ice_arrives(self, now: float, fetch: _Fetch) -> None:
        self.counts["ice_calls"] += 1
        limit = self._channel_limits.get(fetch.channel.arn)
        if limit is None:
            limit = self._channel_limits[fetch.channel.arn] = RateLimiter(
                self.model.ice_tps_per_channel, self.model.window
            )
        fetch.admitted = limit.has_room(now)
        if fetch.admitted:
            limit.record(now)
        else:
            self.counts["ice_throttles"] += 1
        self._at(now + self._latency(), self._ice_answered, fetch)

    def _ice_answered(self, now: float, fetch: _Fetch) -> None:
        if not fetch.admitted:
            self._refused(now, fetch)
            return
        fetch.request.on_answer(fetch.channel, now)
        self.counts["served"] += 1
        self.added.append(fetch.sent_at - fetch.started_at)
        if fetch.started_at >= self.scenario.duration / 2:
            self.counts["served_second_half"] += 1
            self.counts["throttles_second_half"] += fetch.request.throttles
        self._finished(now, fetch)

    def _refused(self, now: float, fetch: _Fetch) -> None:
        error = KvsError("Rate exceeded", channel_arn=fetch.channel.arn, code=THROTTLED)
        try:
            fetch.request.on_answer(fetch.channel, now, error)
        except BrokerError as exc:  # not for a throttle today, but the decision is the request's
            self._failed(now, fetch, exc)
            return
        self._step(now, fetch)

    def _failed(self, now: float, fetch: _Fetch, error: BrokerError) -> None:
        self.failures[type(error).__name__] += 1
        self.counts["failed_sessions"] += 1
        self._at(now + self.model.start_hold, self._free, fetch.instance)  # the error response

    def _finished(self, now: float, fetch: _Fetch) -> None:
        is_offer, client_delay, invoke = fetch.work
        if is_offer:
            self.counts["completed_sessions"] += 1
            self._at(now + invoke, self._free, fetch.instance)
            return
        done_at = now + self.model.start_hold
        self._at(done_at, self._free, fetch.instance)
        self._at(done_at + client_delay, self._offer, (True, client_delay, invoke))

    def _offer(self, now: float, work: _Work) -> None:
        self._dispatch(now, work)

    # ----------------------------------------------------------------- the report

    def _report(self, events: int, wall: float) -> dict[str, Any]:
        s, c = self.scenario, self.counts
        served = c["served"]
        added = sorted(self.added)
        calls_per_sec = s.sessions_per_sec * CALLS_PER_SESSION
        predicted = predicted_throttle_rate(calls_per_sec, s.channels, tps_per_channel=self.model.ice_tps_per_channel)
        simulated = c["ice_throttles"] / served if served else math.nan
        peak_lookups = max(self.lookups_per_second.values(), default=0)
        reads_manifest = self.model.endpoints == "manifest"  # every cold start reads it once
        return {
            "sizing": s.sizing,
            "endpoints": self.model.endpoints,
            "sessions_per_sec": s.sessions_per_sec,
            "channels": s.channels,
            "duration_s": s.duration,
            "sessions": c["sessions"],
            "completed_sessions": c["completed_sessions"],
            "failed_sessions": c["failed_sessions"],
            "credential_requests": c["credential_requests"],
            "served_requests": served,
            "failed_requests": dict(self.failures),
            "kvs_calls": c["ice_calls"] + c["endpoint_lookups"],
            "get_ice_server_config_calls": c["ice_calls"],
            "throttles": c["ice_throttles"],
            "throttles_per_call": _round(simulated),
            "throttles_per_call_second_half": _round(
                c["throttles_second_half"] / c["served_second_half"] if c["served_second_half"] else math.nan
            ),
            "predicted_throttles_per_call": _round(predicted),
            "simulated_over_predicted": _round(simulated / predicted if predicted > 0 else math.nan),
            "added_latency_ms": {
                "p50": percentile_ms(added, 0.50),
                "p99": percentile_ms(added, 0.99),
                "max": percentile_ms(added, 1.0),
            },
            "peak_concurrent_instances": self.peak_busy,
            "peak_instances_alive": self.peak_live,
            "cold_starts": c["cold_starts"],
            "manifest_reads": c["cold_starts"] if reads_manifest else 0,
            "peak_manifest_reads_per_sec": max(self.cold_starts_per_second.values(), default=0)
            if reads_manifest
            else 0,
            "endpoint_lookups": c["endpoint_lookups"],
            "endpoint_throttles": c["endpoint_throttles"],
            "peak_endpoint_lookups_per_sec": peak_lookups,
            "endpoint_lookup_limit_per_sec": self.model.endpoint_tps_per_account,
            "peak_endpoint_lookups_over_limit": _round(peak_lookups / self.model.endpoint_tps_per_account)
            if self.model.endpoint_tps_per_account
            else None,
            "diverged_at_s": None if self.diverged_at is None else round(self.diverged_at, 3),
            "events": events,
            "wall_seconds": round(wall, 2),
        }


def _round(value: float) -> float | None:
    """Seven decimals (so 0.0100002 is not shown as 0.01); JSON has no NaN or infinity: ``null``."""
    return round(value, 7) if math.isfinite(value) else None


def run_scenario(scenario: Scenario, model: FleetModel) -> dict[str, Any]:
    """Simulate one scenario with the broker's default settings (a worker process's entry point)."""
    config = BrokerConfig(channel_arns=(CHANNEL_ARN.format(0),), region="us-east-1")
    report = FleetSimulation(scenario, model, config).run()
    print(
        f"[fleet] {scenario.sessions_per_sec:g} sessions/s over {scenario.channels} channels ({scenario.sizing}): "
        f"{report['throttles_per_call']} throttles/call, {report['wall_seconds']} s",
        file=sys.stderr,
        flush=True,
    )
    return report


def scenarios(rates: Sequence[float], duration: float, seed: int) -> list[Scenario]:
    """Every rate at today's minimum pool and at the recommended one, biggest first."""
    runs = []
    for rate in sorted(rates, reverse=True):
        runs.append(Scenario("minimum", rate, channel_count(rate), duration, seed))
        runs.append(Scenario("recommended", rate, recommended_channel_count(rate), duration, seed))
    return runs


def targets(results: Sequence[dict[str, Any]], model: FleetModel) -> dict[str, Any]:
    """Judge the targets at the recommended pool for each rate, from the unrounded counts.

    Each target gives its bound, each rate's value and verdict, and ``met`` (every rate met it). A
    diverged run has no value (``null``) and meets no target.
    """
    throttles: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    low, high = PREDICTION_RANGE
    for r in sorted((r for r in results if r["sizing"] == "recommended"), key=lambda r: r["sessions_per_sec"]):
        rate, channels = f"{r['sessions_per_sec']:g}", r["channels"]
        if r["diverged_at_s"] is not None or not r["served_requests"]:
            verdict = {"channels": channels, "value": None, "met": False, "diverged_at_s": r["diverged_at_s"]}
            throttles[rate] = ratios[rate] = verdict
            continue
        simulated = r["throttles"] / r["served_requests"]
        predicted = predicted_throttle_rate(
            r["sessions_per_sec"] * CALLS_PER_SESSION, channels, tps_per_channel=model.ice_tps_per_channel
        )
        ratio = simulated / predicted if predicted > 0 else math.inf
        throttles[rate] = {"channels": channels, "value": _round(simulated), "met": simulated <= THROTTLE_TARGET}
        ratios[rate] = {"channels": channels, "value": _round(ratio), "met": low <= ratio <= high}
    return {
        f"throttles_per_call_at_most_{THROTTLE_TARGET:g}": {
            "bound": THROTTLE_TARGET,
            "met": all(v["met"] for v in throttles.values()),
            "recommended_pool_by_rate": throttles,
        },
        f"simulated_over_predicted_within_{low:g}_{high:g}": {
            "bound": [low, high],
            "met": all(v["met"] for v in ratios.values()),
            "recommended_pool_by_rate": ratios,
        },
    }


def run(
    rates: Sequence[float], duration: float, seed: int, model: FleetModel, *, workers: int = WORKERS
) -> dict[str, Any]:
    """Run every scenario in ``workers`` processes and gather the report."""
    started = time.perf_counter()
    runs = scenarios(rates, duration, seed)
    results: dict[Scenario, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_scenario, scenario, model): scenario for scenario in runs}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
    ordered = [results[scenario] for scenario in sorted(runs, key=lambda r: (r.sessions_per_sec, r.channels))]
    return {
        "endpoints": model.endpoints,
        "model": asdict(model),
        "seed": seed,
        "scenarios": ordered,
        "targets": targets(ordered, model),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fleet simulation; JSON on stdout with ``--json``, progress on stderr."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [_positive(part) for part in text.split(",")],
        default=list(DEFAULT_RATES),
        metavar="R,R,...",
        help="session rates per second (default 10,100,1000)",
    )
    parser.add_argument("--duration", type=_positive, default=600.0, metavar="S", help="simulated seconds per scenario")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    parser.add_argument(
        "--endpoints",
        choices=ENDPOINT_MODES,
        default=FleetModel.endpoints,
        help="manifest: a new instance reads every endpoint from the pool manifest (the deployed stack); "
        "lazy: it looks each channel's endpoint up on first use (default %(default)s)",
    )
    parser.add_argument(
        "--endpoint-tps",
        type=int,
        default=FleetModel.endpoint_tps_per_account,
        metavar="N",
        help="account-wide GetSignalingChannelEndpoint limit (default %(default)s; 0: unlimited)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    if args.endpoint_tps < 0:
        parser.error("--endpoint-tps must be >= 0")
    model = FleetModel(endpoints=args.endpoints, endpoint_tps_per_account=args.endpoint_tps)
    report = run(args.rates, args.duration, args.seed, model)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["scenarios"]:
            print(
                f"{r['sessions_per_sec']:>7g}/s {r['channels']:>5} ch ({r['sizing']}): "
                f"{r['throttles_per_call']} throttles/call (predicted {r['predicted_throttles_per_call']}), "
                f"added p99 {r['added_latency_ms']['p99']} ms, failed {sum(r['failed_requests'].values())}"
            )
        for name, target in report["targets"].items():
            values = ", ".join(f"{rate}/s {v['value']}" for rate, v in target["recommended_pool_by_rate"].items())
            print(f"{name}: {'met' if target['met'] else 'NOT met'} ({values})")
        print(f"endpoints: {report['endpoints']}; wall {report['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
