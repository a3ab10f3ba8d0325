"""The official OpenAI SDK's Responses API (`client.responses.create`), unchanged, pointed at the gateway.

Any model of the gateway answers it: an `openai` backend gets the request as sent; the others (Anthropic,
OpenAI-compatible servers, local models) get it translated. State kept by OpenAI (`store: true`,
`previous_response_id`) works on `openai` backends only; elsewhere it is a 400 naming the field.

GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_KEY=... MODEL=gpt-4o python examples/clients/openai_responses.py
"""

import json
import os

import openai

client = openai.OpenAI(
    base_url=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("GATEWAY_KEY", "no-key-on-loopback"),
)
model = os.environ.get("MODEL", "gpt-4o-mini")

response = client.responses.create(
    model=model, instructions="Answer briefly.", input="Say hello in five words.", max_output_tokens=20
)
print("answer:", response.output_text)
print("tokens:", response.usage.input_tokens, "in,", response.usage.output_tokens, "out")

# Streamed: typed events, text in `response.output_text.delta`, usage in `response.completed`.
text = ""
for event in client.responses.create(model=model, input="Count to five.", stream=True):
    if event.type == "response.output_text.delta":
        text += event.delta
    elif event.type == "response.completed":
        print("streamed:", text, f"({event.response.usage.output_tokens} tokens)")

# A function call round trip: the model asks for a call, the client answers it with its output.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The forecast for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
question = {"role": "user", "content": "What is the weather in Lisbon?"}
first = client.responses.create(model=model, input=[question], tools=tools)
for call in (item for item in first.output if item.type == "function_call"):
    print("call:", call.name, json.loads(call.arguments))
    second = client.responses.create(
        model=model,
        tools=tools,
        input=[
            question,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
    )
    print("after the call:", second.output_text)

try:
    client.responses.create(model="no-such-model", input="hi")
except openai.NotFoundError as error:
    print("error:", error.status_code, error.body["message"], "(request", error.request_id + ")")
