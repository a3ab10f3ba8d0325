"""The fake Bedrock Runtime against botocore's own client (what the AWS SDKs run): it accepts what
botocore signs and serializes, botocore reads its answers, its event-stream frames and its errors,
and it refuses a bad signature, a foreign region and a body the API model does not allow, as AWS
does. So the fake the gateway's tests use speaks Bedrock as AWS's SDK understands it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import get_session

from gateway.testing import Behaviour, FakeBedrock
from gateway.testing.behaviour import plan_text, reply_words
from gateway.testing.fake_bedrock import TEST_CREDENTIALS

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROMPT = "Tell me about the weather in Paris"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": [{"text": PROMPT}]}]
REPLY = plan_text(reply_words(PROMPT, 16), None)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    with FakeBedrock.in_thread() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials and region are explicit; this keeps botocore off instance metadata regardless.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fake.behaviour = Behaviour()
    fake.stream_exception = None


def client(fake: FakeBedrock, *, secret: str = TEST_CREDENTIALS[1], region: str = "us-east-1") -> Any:
    return get_session().create_client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=fake.base_url,
        aws_access_key_id=TEST_CREDENTIALS[0],
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def test_botocore_converse_is_answered(fake: FakeBedrock) -> None:
    answer = client(fake).converse(
        modelId=MODEL, messages=MESSAGES, system=[{"text": "Be terse."}], inferenceConfig={"maxTokens": 5}
    )
    assert answer["output"]["message"]["content"] == [{"text": plan_text(reply_words(PROMPT, 16), 5).text}]
    assert answer["stopReason"] == "max_tokens"
    assert answer["usage"]["inputTokens"] == 9 and answer["usage"]["outputTokens"] == 5


def test_botocore_reads_the_event_stream(fake: FakeBedrock) -> None:
    events = list(client(fake).converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    names = [next(iter(event)) for event in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == REPLY.text
    assert events[-1]["metadata"]["usage"]["outputTokens"] == REPLY.tokens


def test_botocore_tool_use_round_trip(fake: FakeBedrock) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": schema}}}]}
    answer = client(fake).converse(modelId=MODEL, messages=MESSAGES, toolConfig=tools)
    [block] = answer["output"]["message"]["content"]
    assert answer["stopReason"] == "tool_use" and block["toolUse"]["input"] == {"city": "fake"}


def test_botocore_raises_the_in_stream_exception(fake: FakeBedrock) -> None:
    fake.stream_exception, fake.stream_exception_after = "throttlingException", 2
    stream = client(fake).converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    with pytest.raises(ClientError) as error:  # botocore's EventStreamError
        list(stream)
    assert error.value.response["Error"]["Code"] == "throttlingException"


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "ThrottlingException"), (503, "ServiceUnavailableException"), (400, "ValidationException")],
)
def test_botocore_reads_the_error_shape(fake: FakeBedrock, status: int, code: str) -> None:
    fake.behaviour = Behaviour(status=status)
    with pytest.raises(ClientError) as error:
        client(fake).converse(modelId=MODEL, messages=MESSAGES)
    assert error.value.response["Error"]["Code"] == code
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"secret": "wrong"}, "InvalidSignatureException"),
        ({"region": "eu-west-1"}, "InvalidSignatureException"),
    ],
    ids=["wrong-secret", "wrong-region"],
)
def test_a_signature_aws_would_refuse_is_refused(
    fake: FakeBedrock, kwargs: dict[str, str], code: str
) -> None:
    with pytest.raises(ClientError) as error:
        client(fake, **kwargs).converse(modelId=MODEL, messages=MESSAGES)
    assert error.value.response["Error"]["Code"] == code
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_service_rules_beyond_the_model_are_checked(fake: FakeBedrock) -> None:
    with pytest.raises(ClientError, match="alternate between user and assistant"):
        client(fake).converse(modelId=MODEL, messages=[*MESSAGES, *MESSAGES])
    with pytest.raises(ClientError, match="toolConfig field must be defined"):
        use = {"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}}
        client(fake).converse(modelId=MODEL, messages=[*MESSAGES, {"role": "assistant", "content": [use]}])
