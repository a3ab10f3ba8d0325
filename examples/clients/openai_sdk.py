"""The official OpenAI SDK, unchanged, pointed at the gateway.

GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_KEY=... MODEL=gpt-4o-mini python examples/clients/openai_sdk.py
"""

import os

import openai

client = openai.OpenAI(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_KEY", "no-key-on-loopback"),
)
model = os.environ.get("MODEL", "gpt-4o-mini")

reply = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=20
)
completion = reply.parse()
print(
    "served by:",
    reply.headers["x-gateway-backend"],
    "after",
    reply.headers["x-gateway-attempts"],
    "attempt(s)",
)
print("answer:", completion.choices[0].message.content)
print("tokens:", completion.usage.prompt_tokens, "in,", completion.usage.completion_tokens, "out")

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to five."}],
    stream=True,
    stream_options={"include_usage": True},
)
text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
print("streamed:", text)

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
except openai.NotFoundError as error:
    print("error:", error.status_code, error.body["message"], "(request", error.request_id + ")")
