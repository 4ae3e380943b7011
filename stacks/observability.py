"""Observability: a dashboard and alarms built from the metrics the broker emits."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from broker.telemetry import METRICS_NAMESPACE, PEER_DIMENSION, PEERS, SERVICE_DIMENSION, SERVICE_NAME, MetricName
from stacks.agent_runtime import AgentRuntime
from stacks.broker_api import BrokerApi

ONE_MINUTE = Duration.minutes(1)
MIN_CALLS_FOR_RATIO = 100
"""Below this many KVS calls in a minute the throttle ratio is noise (one throttle in ten calls is
10 %): the alarm's expression counts such a minute as 0."""


@dataclass(frozen=True)
class ObservabilitySettings:
    """Alarm thresholds.

    Attributes:
        max_throttles_per_call: KVS throttles per call the pool was sized for (``maxThrottleRate``);
            more than this for 3 of 5 minutes means the pool is too small for the load.
        p99_latency_ms: The broker's p99 request latency that counts as slow.
        lambda_errors_per_minute: Lambda errors per minute that raise the alarm.
    """

    max_throttles_per_call: float = 0.01
    p99_latency_ms: int = 1500
    lambda_errors_per_minute: int = 1


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


class Observability(Construct):
    """The broker's dashboard and its alarms (no actions: subscribe a topic to ``alarms`` to be paged).

    Attributes:
        dashboard: The CloudWatch dashboard.
        throttles_per_call: KVS throttles per GetIceServerConfig call, both peers together.
        kvs_throttle_alarm: Throttles per call above the rate the pool was sized for: it is too small.
        pool_exhausted_alarm: A request was refused with 503 because no channel could serve.
        lambda_error_alarm: The broker Lambda failed.
        latency_alarm: The broker's p99 latency is above the threshold.
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
        self.alarms = [
            self.kvs_throttle_alarm,
            self.pool_exhausted_alarm,
            self.lambda_error_alarm,
            self.latency_alarm,
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
