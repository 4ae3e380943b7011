"""Builds the app: settings from context, the stack, and cdk-nag on every synth."""

from __future__ import annotations

import os
from collections.abc import Mapping

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import AppConfig
from stacks.voice_agent_stack import VoiceAgentStack


def stack_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """Return the deployment environment: environment-agnostic unless the CDK CLI names one.

    The CLI sets ``CDK_DEFAULT_ACCOUNT`` and ``CDK_DEFAULT_REGION`` from the caller's credentials
    and profile; with none (as in ``make synth`` offline) the stack stays environment-agnostic.
    """
    env = os.environ if environ is None else environ
    return Environment(account=env.get("CDK_DEFAULT_ACCOUNT") or None, region=env.get("CDK_DEFAULT_REGION") or None)


def build_app(app: App, *, env: Environment | None = None) -> VoiceAgentStack:
    """Add the stack to ``app`` from its context and attach the AwsSolutions checks.

    Raises:
        stacks.config.ContextError: A context value is missing or invalid.
    """
    config = AppConfig.from_context(app.node.try_get_context)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return VoiceAgentStack(app, config.stack_name, config=config, env=env or stack_environment())
