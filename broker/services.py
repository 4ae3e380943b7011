"""The AWS services the broker calls, by their botocore names.

The Lambda bundle keeps botocore's data for these services only (``stacks/lambda_bundle.py``): the
other ~430 would add 25 MB to the package and a longer directory scan to every client creation.
Tests check that every client the broker creates is listed here and that the function (traced or
not) runs from a botocore trimmed to this list.
"""

AWS_SERVICES = (
    "kinesisvideo",  # GetSignalingChannelEndpoint
    "kinesis-video-signaling",  # GetIceServerConfig
    "bedrock-agentcore",  # InvokeAgentRuntime
    "secretsmanager",  # the session signing key, read once per execution environment
    "xray",  # the X-Ray SDK's sampling rules, with active tracing on
)
