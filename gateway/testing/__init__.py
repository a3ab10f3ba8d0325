"""Fake OpenAI, Anthropic, Gemini, Azure OpenAI, Bedrock and Vertex AI HTTP servers with fault injection,
for the gateway's tests and benchmarks.

Use `async with FakeOpenAI(Behaviour(...)) as fake`, `with FakeAnthropic.in_thread() as fake`, or
`python -m gateway.testing openai|anthropic|gemini|azure_openai|bedrock|vertex --port 0` for a separate
process (FakeVertex checks tokens issued to the service accounts it makes: in a process of its own,
`--service-account PATH` writes one).
"""

from gateway.testing.behaviour import Behaviour, FakeServer, Stats, count_tokens
from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_azure_openai import FakeAzureOpenAI
from gateway.testing.fake_bedrock import FakeBedrock
from gateway.testing.fake_gemini import FakeGemini
from gateway.testing.fake_openai import FakeOpenAI
from gateway.testing.fake_vertex import FakeVertex

__all__ = [
    "Behaviour",
    "FakeAnthropic",
    "FakeAzureOpenAI",
    "FakeBedrock",
    "FakeGemini",
    "FakeOpenAI",
    "FakeServer",
    "FakeVertex",
    "Stats",
    "count_tokens",
]
