"""Broker API: the Lambda browsers call for ICE servers and SDP exchange, behind an HTTP API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

import jsii
from aws_cdk import CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from broker.api.service import Transport
from broker.api.websocket_urls import DEFAULT_EXPIRES_SECONDS
from broker.telemetry import METRICS_NAMESPACE, SERVICE_NAME
from stacks.agent_runtime import AgentRuntime
from stacks.checks import acknowledge, acknowledge_wildcard
from stacks.lambda_bundle import broker_function
from stacks.turn_pool import TurnChannelPool

HANDLER = "broker.lambda_handler.handler"
SESSION_OFFER_PATH = "/sessions/{sessionId}/api/offer"
ROUTES: tuple[tuple[str, apigwv2.HttpMethod], ...] = (
    ("/start", apigwv2.HttpMethod.POST),
    (SESSION_OFFER_PATH, apigwv2.HttpMethod.POST),
    (SESSION_OFFER_PATH, apigwv2.HttpMethod.PATCH),
)
"""The Pipecat client contract: start, SDP offer, trickled ICE candidates."""

_ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "requestTime": "$context.requestTime",
        "sourceIp": "$context.identity.sourceIp",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "responseLatency": "$context.responseLatency",
        "integrationLatency": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
        "authorizerError": "$context.authorizer.error",
    },
    separators=(",", ":"),
)


@dataclass(frozen=True)
class JwtSettings:
    """An existing identity provider's JWT issuer and the audiences the API accepts."""

    issuer_url: str
    audience: tuple[str, ...]


@dataclass(frozen=True)
class BrokerApiSettings:
    """The broker API's callers, limits and runtime.

    Attributes:
        allowed_origins: Browser origins allowed by CORS (``https://app.example.com``).
        jwt: The identity provider whose tokens the API accepts; ``None`` creates a Cognito user
            pool and a public client for the browser.
        throttle_rate_limit: Steady-state requests per second the stage accepts.
        throttle_burst_limit: Burst of requests the stage accepts.
        transports: What ``POST /start`` offers: ``webrtc`` (TURN credentials from the pool) and/or
            ``websocket`` (a presigned URL of the runtime's WebSocket).
        websocket_url_expires_seconds: How long a presigned WebSocket URL stays valid (1-300 s).
        memory_size: The Lambda's memory in MB (CPU scales with it, and so does cold start).
        timeout_seconds: The Lambda's timeout; the HTTP API gives up after 30 s.
        log_retention: How long the Lambda's and the API's logs are kept.
    """

    allowed_origins: tuple[str, ...]
    jwt: JwtSettings | None = None
    throttle_rate_limit: int = 50
    throttle_burst_limit: int = 100
    transports: tuple[Transport, ...] = (Transport.WEBRTC, Transport.WEBSOCKET)
    websocket_url_expires_seconds: int = DEFAULT_EXPIRES_SECONDS
    memory_size: int = 1024
    timeout_seconds: int = 29
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


class BrokerApi(Construct):
    """An ARM64 Python Lambda holding ``broker/`` behind an HTTP API with a JWT authorizer on every route.

    Attributes:
        function: The broker Lambda.
        role: The Lambda's role: its own log group, the pool grant and invoking the runtime (and
            opening its WebSocket, whose URLs the function presigns, when ``websocket`` is offered).
        log_group: The Lambda's log group.
        http_api: The HTTP API.
        stage: The ``$default`` stage (throttling and access logs).
        access_log_group: The stage's access log group.
        authorizer: The JWT authorizer every route uses.
        routes: The API's routes, in ``ROUTES`` order.
        url: The API's base URL.
        user_pool: The Cognito user pool, when no identity provider was configured, else ``None``.
        user_pool_client: The browser's Cognito app client, when ``user_pool`` is set.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: BrokerApiSettings,
        pool: TurnChannelPool,
        agent: AgentRuntime,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "FunctionLogs", retention=settings.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Broker Lambda: TURN credentials from the pool and invoking the agent runtime",
        )
        # Session ids are HMACs of the caller's JWT subject under this key: bound without a database.
        self.session_key = secretsmanager.Secret(
            self,
            "SessionSigningKey",
            description="HMAC key that binds broker session ids to the caller that started them",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.session_key,
            "SMG4",
            "rotating the session signing key would invalidate every live session id (sessions last up to "
            "8 hours); the key never leaves the broker and only binds ids, it protects no stored data",
        )
        websocket = Transport.WEBSOCKET in settings.transports
        self.function = broker_function(
            self,
            "Function",
            description="TURN credential broker and SDP relay for the Pipecat voice agent",
            handler=HANDLER,
            memory_size=settings.memory_size,
            timeout=Duration.seconds(settings.timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            environment={
                **pool.broker_environment,
                "AGENT_INVOKER": "agentcore",
                "AGENT_RUNTIME_ARN": agent.runtime_arn,
                "SESSION_SIGNING_KEY_SECRET_ARN": self.session_key.secret_arn,
                "ALLOWED_ORIGINS": ",".join(settings.allowed_origins),
                "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "BROKER_TRANSPORTS": ",".join(settings.transports),
                **({"WEBSOCKET_URL_EXPIRES_SECONDS": str(settings.websocket_url_expires_seconds)} if websocket else {}),
            },
        )
        self.session_key.grant_read(self.role)
        pool.grant_ice_credentials(self.role)
        agent.runtime.grant_invoke_runtime(self.role)
        if websocket:
            # A presigned URL carries its signer's authority: the browser opens the WebSocket as this role.
            agent.grant_websocket_invoke(self.role)
        runtime_id = Stack.of(self).get_logical_id(cast(CfnElement, agent.runtime.node.default_child))
        acknowledge_wildcard(
            self.role,
            f"Resource::<{runtime_id}.AgentRuntimeArn>/*",
            "the endpoints (qualifiers such as DEFAULT) of this one agent runtime: InvokeAgentRuntime "
            "(and its WebSocket, when offered) is authorized against the runtime and the endpoint it names",
        )

        self.user_pool: cognito.UserPool | None = None
        self.user_pool_client: cognito.UserPoolClient | None = None
        self.authorizer = self._authorizer(settings.jwt)

        self.http_api = apigwv2.HttpApi(
            self,
            "HttpApi",
            description="Pipecat client API: /start and the session offer routes",
            create_default_stage=False,
            default_authorizer=self.authorizer,
            cors_preflight=apigwv2.CorsPreflightOptions(
                allow_origins=list(settings.allowed_origins),
                allow_methods=[
                    apigwv2.CorsHttpMethod.POST,
                    apigwv2.CorsHttpMethod.PATCH,
                    apigwv2.CorsHttpMethod.OPTIONS,
                ],
                allow_headers=["authorization", "content-type"],
                max_age=Duration.minutes(10),
            ),
        )
        integration = integrations.HttpLambdaIntegration("Broker", self.function)
        self.routes: list[apigwv2.HttpRoute] = []
        for path, method in ROUTES:
            self.routes.extend(
                self.http_api.add_routes(
                    path=path, methods=[method], integration=integration, authorizer=self.authorizer
                )
            )

        self.access_log_group = logs.LogGroup(
            self, "AccessLogs", retention=settings.log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        self.stage = apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.http_api,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=settings.throttle_rate_limit, burst_limit=settings.throttle_burst_limit
            ),
            access_log_settings=_AccessLogs(self.access_log_group),
        )
        self.url: str = self.stage.url

    def _authorizer(self, jwt: JwtSettings | None) -> apigwv2.IHttpRouteAuthorizer:
        if jwt is not None:
            return authorizers.HttpJwtAuthorizer("JwtAuthorizer", jwt.issuer_url, jwt_audience=list(jwt.audience))
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.user_pool,
            "COG2",
            "MFA (TOTP) is optional so a team can script test users and tokens with "
            "admin-initiate-auth; this pool only exists when no identity provider is configured, and "
            "production deployments bring one (jwtIssuerUrl, jwtAudience) with its own MFA policy",
        )
        acknowledge(
            self.user_pool,
            "COG8",
            "the Plus feature plan (threat protection) is paid; this pool only exists when no identity "
            "provider is configured, sign-up is disabled and users are created by an administrator; "
            "production deployments set jwtIssuerUrl and jwtAudience",
        )
        self.user_pool_client = self.user_pool.add_client(
            "BrowserClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, admin_user_password=True),
            prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(1),
        )
        return authorizers.HttpUserPoolAuthorizer(
            "JwtAuthorizer", self.user_pool, user_pool_clients=[self.user_pool_client]
        )


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """JSON access logs, one line per request, to a CloudWatch log group."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        """The log group receiving the access logs."""
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        """The access log line: request id, caller, route, status, latencies and errors."""
        return apigateway.AccessLogFormat.custom(_ACCESS_LOG_FORMAT)
