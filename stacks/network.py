"""Network: the VPC the agent runtime runs in, and the runtime's security group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from aws_cdk import CfnResource, RemovalPolicy, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.checks import ignore_lint_rule

HTTPS_PORT = 443
"""KVS TURN (UDP and TLS/TCP), STUN and every AWS API the agent calls listen on 443."""


@dataclass(frozen=True)
class NetworkSettings:
    """How the VPC is laid out.

    Attributes:
        nat_gateways: NAT gateways for the private subnets' egress (1, or 2 for one per AZ).
        max_azs: Availability zones to spread the subnets over.
        cidr: The VPC's IPv4 range (KVS TURN does not support IPv6).
        flow_log_retention: How long the VPC flow logs are kept.
    """

    nat_gateways: int = 1
    max_azs: int = 2
    cidr: str = "10.0.0.0/16"
    flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


class Network(Construct):
    """A VPC with public and private-with-egress subnets, NAT, flow logs and the runtime's security group.

    There is no PrivateLink endpoint for KVS TURN, so the agent reaches its relay through NAT.

    Attributes:
        vpc: The VPC.
        private_subnets: Where the agent runtime's network interfaces go.
        runtime_security_group: The agent runtime's security group: no ingress, egress to TCP and
            UDP 443 only.
        flow_log_group: The log group receiving the VPC flow logs.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: NetworkSettings) -> None:
        super().__init__(scope, construct_id)
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=settings.flow_log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
            max_azs=settings.max_azs,
            nat_gateways=settings.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            # Nothing uses the default security group. Restricting it needs a custom-resource
            # Lambda in the stack, which would be the only Lambda not under this project's control.
            restrict_default_security_group=False,
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        for subnet in [*self.vpc.public_subnets, *self.vpc.private_subnets]:
            if not Token.is_unresolved(subnet.availability_zone):
                # With a named account CDK looks the zones up once (cached in cdk.context.json) and
                # writes their names, so a later change in the account's zone list cannot move
                # subnets. cfn-lint W3010 warns about exactly those literal names.
                ignore_lint_rule(cast(CfnResource, subnet.node.default_child), "W3010")

        self.runtime_security_group = ec2.SecurityGroup(
            self,
            "RuntimeSecurityGroup",
            vpc=self.vpc,
            description="Agent runtime: no ingress; egress to KVS TURN/STUN and AWS APIs on 443 only",
            allow_all_outbound=False,
        )
        # Security groups do not filter the Amazon-provided DNS resolver or NTP, so 443 is enough.
        self.runtime_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "TLS: AWS APIs and TURN over TLS/TCP"
        )
        self.runtime_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.udp(HTTPS_PORT), "UDP: STUN and TURN relay (turn:/turns: UDP)"
        )
