"""The one stack: network, TURN channel pool, agent runtime, broker API and observability."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from stacks.agent_runtime import AgentRuntime
from stacks.broker_api import BrokerApi
from stacks.config import AppConfig
from stacks.network import Network
from stacks.observability import Observability
from stacks.turn_pool import TurnChannelPool


class VoiceAgentStack(Stack):
    """Everything a deployment needs, one construct per concern.

    One stack, because every part is deployed and removed together and the parts reference one
    another (channel ARNs, runtime ARN): cross-stack exports would only add coupling.

    Attributes:
        network: The VPC and the runtime's security group.
        pool: The KVS signaling channels that mint TURN credentials.
        agent: The AgentCore runtime running the Pipecat agent.
        api: The broker Lambda and its HTTP API.
        observability: The dashboard and alarms.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="Pipecat voice agent on Bedrock AgentCore with TURN from a pool of KVS channels",
            **kwargs,
        )
        self.network = Network(self, "Network", settings=config.network)
        self.pool = TurnChannelPool(self, "TurnPool", settings=config.turn_pool)
        self.agent = AgentRuntime(self, "Agent", settings=config.agent_runtime, network=self.network)
        self.api = BrokerApi(self, "BrokerApi", settings=config.broker_api, pool=self.pool, agent=self.agent)
        self.observability = Observability(
            self, "Observability", settings=config.observability, api=self.api, agent=self.agent
        )

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Broker API base URL (POST /start)")
        CfnOutput(self, "AgentRuntimeArn", value=self.agent.runtime_arn, description="AgentCore runtime ARN")
        CfnOutput(
            self,
            "TurnChannelPrefix",
            value=self.pool.name_prefix,
            description="Every KVS signaling channel of the TURN pool is named with this prefix",
        )
        CfnOutput(self, "TurnChannelCount", value=str(self.pool.channel_count), description="Channels in the TURN pool")
        CfnOutput(
            self,
            "DashboardName",
            value=self.observability.dashboard.dashboard_name,
            description="CloudWatch dashboard of the broker and the agent",
        )
        if self.api.user_pool is not None and self.api.user_pool_client is not None:
            CfnOutput(self, "UserPoolId", value=self.api.user_pool.user_pool_id, description="Cognito user pool")
            CfnOutput(
                self,
                "UserPoolClientId",
                value=self.api.user_pool_client.user_pool_client_id,
                description="Cognito app client for the browser (the JWT audience)",
            )
