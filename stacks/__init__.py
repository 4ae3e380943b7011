"""CDK constructs and the stack for Pipecat voice agents on AgentCore with KVS-managed TURN."""
