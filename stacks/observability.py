"""Observability: a dashboard and alarms built from the metrics the broker and the agent emit."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from agent import telemetry as agent_telemetry
from broker.telemetry import METRICS_NAMESPACE, PEER_DIMENSION, PEERS, SERVICE_DIMENSION, SERVICE_NAME, MetricName
from stacks.agent_runtime import AgentRuntime
from stacks.broker_api import BrokerApi

ONE_MINUTE = Duration.minutes(1)
MIN_CALLS_FOR_RATIO = 100
"""Below this many KVS calls in a minute the throttle ratio is noise (one throttle in ten calls is
10 %): the alarm's expression counts such a minute as 0."""
MIN_TURNS_FOR_PERCENTILE = 20
"""The p95 of fewer turns than this is in effect the slowest one, a slow answer rather than a slow
agent: the turn latency alarm's expression counts such a minute as 0 (about three calls at once
give 20 turns a minute; a quieter deployment reads the dashboard instead)."""


@dataclass(frozen=True)
class ObservabilitySettings:
    """Alarm thresholds, and the pipeline whose turn metrics the dashboard and alarm read.

    Attributes:
        max_throttles_per_call: KVS throttles per call the pool was sized for (``maxThrottleRate``);
            more than this for 3 of 5 minutes means the pool is too small for the load.
        p99_latency_ms: The broker's p99 request latency that counts as slow.
        lambda_errors_per_minute: Lambda errors per minute that raise the alarm.
        turn_latency_p95_ms: The agent's p95 turn latency (user stopped speaking -> bot's first
            audio) that counts as slow (``turnLatencyAlarmP95Ms``).
        agent_pipeline: The pipeline the agent runs (``agentPipeline``): the agent's metrics carry
            it as a dimension.
    """

    max_throttles_per_call: float = 0.01
    p99_latency_ms: int = 1500
    lambda_errors_per_minute: int = 1
    turn_latency_p95_ms: int = 2000
    agent_pipeline: str = "nova-sonic"


def broker_metric(
    metric_name: str, statistic: str, *, label: str | None = None, peer: str | None = None
) -> cloudwatch.Metric:
    """Return one of the broker's metrics (``broker.telemetry``) at one-minute resolution.

    Without ``peer`` it is the total over both peers; with it, that peer's share. Leave ``label`` out
    for alarms: a labelled metric makes the alarm a metric-math alarm.
    """
    dimensions = {SERVICE_DIMENSION: SERVICE_NAME} | ({PEER_DIMENSION: peer} if peer else {})
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=ONE_MINUTE,
        label=label,
    )


def agent_metric(
    metric_name: str,
    statistic: str,
    *,
    pipeline: str,
    label: str | None = None,
    transport: str | None = None,
) -> cloudwatch.Metric:
    """Return one of the agent's turn metrics (``agent.telemetry``) at one-minute resolution.

    Without ``transport`` it is the pipeline's series over every transport (the agent publishes each
    turn under both dimension sets, as percentiles of separate series cannot be merged).
    """
    dimensions = {agent_telemetry.PIPELINE_DIMENSION: pipeline} | (
        {agent_telemetry.TRANSPORT_DIMENSION: transport} if transport else {}
    )
    return cloudwatch.Metric(
        namespace=agent_telemetry.METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=ONE_MINUTE,
        label=label,
    )


def per_service(metric_name: str, statistic: str, *, pipeline: str) -> cloudwatch.SearchExpression:
    """Every service's series of one of the agent's service metrics, one line per service.

    A search, because the services are whatever the pipeline's Pipecat classes are.
    """
    schema = ",".join(
        (agent_telemetry.METRICS_NAMESPACE, agent_telemetry.PIPELINE_DIMENSION, agent_telemetry.SERVICE_DIMENSION)
    )
    query = f'{{{schema}}} MetricName="{metric_name}" {agent_telemetry.PIPELINE_DIMENSION}="{pipeline}"'
    return cloudwatch.SearchExpression(
        expression=f"SEARCH('{query}', '{statistic}', {int(ONE_MINUTE.to_seconds())})", label="", period=ONE_MINUTE
    )


class Observability(Construct):
    """The dashboard and its alarms (no actions: subscribe a topic to ``alarms`` to be paged).

    Attributes:
        dashboard: The CloudWatch dashboard.
        throttles_per_call: KVS throttles per GetIceServerConfig call, both peers together.
        kvs_throttle_alarm: Throttles per call above the rate the pool was sized for: it is too small.
        pool_exhausted_alarm: A request was refused with 503 because no channel could serve.
        lambda_error_alarm: The broker Lambda failed.
        latency_alarm: The broker's p99 latency is above the threshold.
        turn_latency_p95: The agent's p95 turn latency, counted only in minutes with enough turns.
        turn_latency_alarm: The agent's p95 turn latency is above ``turnLatencyAlarmP95Ms``.
        alarms: All of the above.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: ObservabilitySettings,
        api: BrokerApi,
        agent: AgentRuntime,
    ) -> None:
        super().__init__(scope, construct_id)
        throttles = broker_metric(MetricName.KVS_THROTTLES, "Sum")
        exhausted = broker_metric(MetricName.POOL_EXHAUSTED, "Sum")
        p99_latency = broker_metric(MetricName.REQUEST_LATENCY, "p99")
        lambda_errors = api.function.metric_errors(period=ONE_MINUTE, statistic="Sum")

        self.throttles_per_call = cloudwatch.MathExpression(
            expression=f"IF(calls >= {MIN_CALLS_FOR_RATIO}, throttles / calls, 0)",
            using_metrics={"throttles": throttles, "calls": broker_metric(MetricName.KVS_CALLS, "Sum")},
            label="KVS throttles per call",
            period=ONE_MINUTE,
        )
        self.kvs_throttle_alarm = self.throttles_per_call.create_alarm(
            self,
            "KvsThrottlesPerCall",
            alarm_description=f"KVS throttled more than {settings.max_throttles_per_call:g} of GetIceServerConfig "
            "calls (the rate the pool was sized for) for 3 of 5 minutes: the load outgrew the pool; raise "
            "peakSessionsPerSecond (or channelCount) and deploy, or use shared credentials",
            threshold=settings.max_throttles_per_call,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.pool_exhausted_alarm = exhausted.create_alarm(
            self,
            "PoolExhausted",
            alarm_description="The broker refused requests with 503: no channel of the pool could serve",
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.lambda_error_alarm = lambda_errors.create_alarm(
            self,
            "LambdaErrors",
            alarm_description="The broker Lambda raised errors (see its log group)",
            threshold=settings.lambda_errors_per_minute,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.latency_alarm = p99_latency.create_alarm(
            self,
            "P99Latency",
            alarm_description=f"Broker p99 request latency above {settings.p99_latency_ms} ms for 3 of 5 minutes",
            threshold=settings.p99_latency_ms,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._turn_latency_alarm(settings)
        self.alarms = [
            self.kvs_throttle_alarm,
            self.pool_exhausted_alarm,
            self.lambda_error_alarm,
            self.latency_alarm,
            self.turn_latency_alarm,
        ]

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="KVS GetIceServerConfig calls and throttles, per peer",
                left=[
                    broker_metric(metric, "Sum", label=f"{what} ({peer})", peer=peer)
                    for metric, what in ((MetricName.KVS_CALLS, "calls"), (MetricName.KVS_THROTTLES, "throttles"))
                    for peer in PEERS
                ],
                right=[broker_metric(MetricName.CACHE_HITS, "Sum", label="Shared credential hits")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="KVS throttles per call",
                left=[self.throttles_per_call],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=settings.max_throttles_per_call, label="sized for")
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Pool exhausted (503 with Retry-After)",
                left=[exhausted.with_(label="Requests refused")],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Broker latency (ms)",
                left=[
                    broker_metric(MetricName.REQUEST_LATENCY, "p50", label="Request p50"),
                    p99_latency.with_(label="Request p99"),
                    *(
                        broker_metric(
                            MetricName.CREDENTIAL_LATENCY, "p99", label=f"ICE servers p99 ({peer})", peer=peer
                        )
                        for peer in PEERS
                    ),
                ],
                left_annotations=[cloudwatch.HorizontalAnnotation(value=settings.p99_latency_ms, label="p99 alarm")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Broker Lambda",
                left=[
                    api.function.metric_invocations(period=ONE_MINUTE, statistic="Sum"),
                    lambda_errors,
                    api.function.metric_throttles(period=ONE_MINUTE, statistic="Sum"),
                ],
                right=[api.function.metric_duration(period=ONE_MINUTE, statistic="p99")],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="HTTP API",
                left=[
                    api.http_api.metric_count(period=ONE_MINUTE, statistic="Sum"),
                    api.http_api.metric_client_error(period=ONE_MINUTE, statistic="Sum"),
                    api.http_api.metric_server_error(period=ONE_MINUTE, statistic="Sum"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Agent runtime",
                left=[
                    agent.runtime.metric_invocations(period=ONE_MINUTE, statistic="Sum"),
                    agent.runtime.metric_session_count(period=ONE_MINUTE, statistic="Sum"),
                    agent.runtime.metric_total_errors(period=ONE_MINUTE, statistic="Sum"),
                ],
                right=[agent.runtime.metric_latency(period=ONE_MINUTE, statistic="p99")],
                width=12,
            ),
        )
        self._agent_widgets(settings)

    def _turn_latency_alarm(self, settings: ObservabilitySettings) -> None:
        """p95 turn latency over every transport, above the threshold for 3 of 5 minutes."""
        turn = functools.partial(
            agent_metric, agent_telemetry.MetricName.TURN_LATENCY, pipeline=settings.agent_pipeline
        )
        self.turn_latency_p95 = cloudwatch.MathExpression(
            expression=f"IF(turns >= {MIN_TURNS_FOR_PERCENTILE}, p95, 0)",
            using_metrics={"p95": turn("p95"), "turns": turn("SampleCount")},
            label="Turn latency p95 (ms)",
            period=ONE_MINUTE,
        )
        self.turn_latency_alarm = self.turn_latency_p95.create_alarm(
            self,
            "TurnLatencyP95",
            alarm_description=f"The agent's p95 turn latency (user stopped speaking -> bot's first audio) was above "
            f"{settings.turn_latency_p95_ms} ms for 3 of 5 minutes with at least {MIN_TURNS_FOR_PERCENTILE} turns a "
            "minute: callers wait too long for answers; the dashboard's breakdown and per-service TTFB say where "
            "the time goes (threshold: turnLatencyAlarmP95Ms)",
            threshold=settings.turn_latency_p95_ms,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _agent_widgets(self, settings: ObservabilitySettings) -> None:
        """Turn latency, time to first word and the services' share, from the agent's EMF metrics."""
        names = agent_telemetry.MetricName
        pipeline = settings.agent_pipeline
        metric = functools.partial(agent_metric, pipeline=pipeline)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title=f"Turn latency, user stopped speaking -> bot speaks (ms, {pipeline})",
                left=[
                    metric(names.TURN_LATENCY, "p50", label="p50"),
                    metric(names.TURN_LATENCY, "p95", label="p95"),
                    *(
                        metric(names.TURN_LATENCY, "p95", label=f"p95 ({transport})", transport=transport)
                        for transport in agent_telemetry.TRANSPORTS
                    ),
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=settings.turn_latency_p95_ms, label="p95 alarm")
                ],
                right=[metric(names.TURN_LATENCY, "SampleCount", label="Turns")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title=f"Time to first word, client connected -> greeting (ms, {pipeline})",
                left=[
                    metric(names.TIME_TO_FIRST_WORD, "p50", label="p50"),
                    metric(names.TIME_TO_FIRST_WORD, "p95", label="p95"),
                ],
                right=[metric(names.TIME_TO_FIRST_WORD, "SampleCount", label="Calls greeted")],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Service time to first byte p95, per service (ms)",
                left=[per_service(names.SERVICE_TTFB, "p95", pipeline=pipeline)],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Service processing time p95, per service (ms)",
                left=[per_service(names.SERVICE_PROCESSING, "p95", pipeline=pipeline)],
                width=12,
            ),
        )
