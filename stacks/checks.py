"""Helpers for the template checks: cdk-nag acknowledgments and cfn-lint exceptions.

Both are made on the construct or resource that causes the finding, with the reason in the code.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Stack, Token, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one AwsSolutions ``rule`` (e.g. ``COG2``) on ``construct``, with a specific reason."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason))


def acknowledge_wildcard(construct: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one ``AwsSolutions-IAM5`` wildcard finding, e.g. ``Resource::*``, on ``construct``."""
    acknowledge(construct, f"IAM5[{finding}]", reason)


def nag_arn(
    scope: IConstruct, service: str, resource: str, *, any_region: bool = False, with_account: bool = True
) -> str:
    """Return an ARN spelled the way cdk-nag names it in a finding id.

    cdk-nag writes unresolved pseudo parameters as ``<AWS::Region>``; once the CLI (or
    ``CDK_DEFAULT_REGION``) fixes the region, the same ARN carries the literal region and partition.
    """
    stack = Stack.of(scope)

    def spelled(value: str, pseudo: str) -> str:
        return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

    return ":".join(
        [
            "arn",
            spelled(stack.partition, "Partition"),
            service,
            "*" if any_region else spelled(stack.region, "Region"),
            spelled(stack.account, "AccountId") if with_account else "",
            resource,
        ]
    )


def ignore_lint_rule(resource: CfnResource, rule: str) -> None:
    """Make cfn-lint skip ``rule`` on this one resource (the caller says why in a comment)."""
    metadata = resource.get_metadata("cfn-lint") or {}
    config = metadata.setdefault("config", {})
    config["ignore_checks"] = sorted({*config.get("ignore_checks", []), rule})
    resource.add_metadata("cfn-lint", metadata)


def redundant_depends_on(resources: list[CfnResource]) -> None:
    """Skip cfn-lint W3005 on resources whose L2 construct adds a DependsOn next to a Ref or GetAtt.

    The explicit DependsOn duplicates an order the reference already enforces: harmless, and not
    ours to remove without overriding the L2 construct's output.
    """
    for resource in resources:
        ignore_lint_rule(resource, "W3005")
