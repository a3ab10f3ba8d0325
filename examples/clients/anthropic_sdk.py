"""The official Anthropic SDK, unchanged, pointed at the gateway (any backend: the gateway translates).

GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_KEY=... MODEL=claude-haiku python examples/clients/anthropic_sdk.py
"""

import os

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
    api_key=os.environ.get("GATEWAY_KEY", "no-key-on-loopback"),
)
model = os.environ.get("MODEL", "claude-haiku")

message = client.messages.create(
    model=model, max_tokens=50, messages=[{"role": "user", "content": "Say hello in five words."}]
)
print("answer:", message.content[0].text, "| stop:", message.stop_reason)
print("tokens:", message.usage.input_tokens, "in,", message.usage.output_tokens, "out")

with client.messages.stream(
    model=model, max_tokens=50, messages=[{"role": "user", "content": "Count to five."}]
) as stream:
    text = "".join(stream.text_stream)
print("streamed:", text)

try:
    client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
except anthropic.NotFoundError as error:
    print("error:", error.status_code, error.body["error"]["message"], "(request", error.request_id + ")")
