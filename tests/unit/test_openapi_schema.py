"""The OpenAPI documents of both apps: every body, every status, limits that validation enforces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.entrypoints.http import openapi_models as models
from largeforge.entrypoints.http.app import create_app
from largeforge.entrypoints.http.embeddings import EmbeddingBody
from largeforge.entrypoints.http.lora_adapters import LoadLoraAdapterBody, UnloadLoraAdapterBody
from largeforge.entrypoints.http.schemas import ChatCompletionBody, CompletionBody
from largeforge.entrypoints.http.tokens import DetokenizeBody, TokenizeChatBody, TokenizePromptBody
from tests.router_fakes import FakeReplicas
from tests.unit.test_router_http import router_app

POSTS = {"/v1/chat/completions": ChatCompletionBody, "/v1/completions": CompletionBody}
SERVE_ERRORS = {"400", "401", "404", "413", "429", "503"}
ROUTER_ERRORS = {"400", "401", "404", "413", "503", "4XX"}
ERROR_FIELDS = {"message", "type", "param", "code"}
BASE = {
    "/v1/chat/completions": {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "a b"}],
        "logprobs": True,
    },
    "/v1/completions": {"model": "fake-model", "prompt": "a b"},
}


@pytest.fixture(scope="module")
def served() -> Iterator[TestClient[Any]]:
    from tests.conftest import make_container

    with TestClient(create_app(make_container(), load_in_background=False)) as client:
        yield client


@pytest.fixture(scope="module")
def serve_doc(served: TestClient[Any]) -> dict[str, Any]:
    response = served.get("/schema/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


@pytest.fixture(scope="module")
def router_doc() -> dict[str, Any]:
    with TestClient(router_app(FakeReplicas())) as client:
        doc: dict[str, Any] = client.get("/schema/openapi.json").json()
        return doc


def json_body(response: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def assert_openai_error(response: dict[str, Any]) -> None:
    schema = json_body(response)
    assert schema["required"] == ["error"]
    error = schema["properties"]["error"]
    assert set(error["required"]) == ERROR_FIELDS
    assert error["additionalProperties"] is False


def request_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    body = doc["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


@pytest.mark.parametrize("path", list(POSTS))
def test_serve_posts_document_every_parameter_and_status(
    serve_doc: dict[str, Any], path: str
) -> None:
    schema = request_schema(serve_doc, path)
    assert set(schema["properties"]) == set(POSTS[path].model_fields)
    assert schema["additionalProperties"] is False
    assert "model" in schema["required"]
    responses = serve_doc["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", *SERVE_ERRORS}
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
    for status in SERVE_ERRORS:
        assert_openai_error(responses[status])
    for status in ("429", "503"):
        assert "Retry-After" in responses[status]["headers"]


def test_serve_documents_its_reads(serve_doc: dict[str, Any]) -> None:
    paths = serve_doc["paths"]
    assert set(paths) == {"/health", "/metrics", "/v1/models", *POSTS, *UTILITY_POSTS, *LORA_POSTS}
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    assert "text/plain; version=0.0.4" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    models = paths["/v1/models"]["get"]["responses"]
    assert set(models) == {"200", "401", "503"}
    card = json_body(models["200"])["properties"]["data"]["items"]
    assert {"id", "object", "created", "owned_by"} <= set(card["required"])


UTILITY_POSTS = {
    "/v1/embeddings": (EmbeddingBody, models.EmbeddingList),
    "/tokenize": ((TokenizePromptBody, TokenizeChatBody), models.TokenizeResponse),
    "/detokenize": (DetokenizeBody, models.DetokenizeResponse),
}
UTILITY_ERRORS = {"400", "401", "404", "413", "503"}
LORA_POSTS = {
    "/v1/load_lora_adapter": LoadLoraAdapterBody,
    "/v1/unload_lora_adapter": UnloadLoraAdapterBody,
}


@pytest.mark.parametrize("path", list(LORA_POSTS))
def test_lora_routes_document_vllms_bodies_and_text_answers(
    serve_doc: dict[str, Any], path: str
) -> None:
    schema = request_schema(serve_doc, path)
    assert set(schema["properties"]) == set(LORA_POSTS[path].model_fields)
    assert "lora_name" in schema["required"]
    assert schema["additionalProperties"] is False
    responses = serve_doc["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", *UTILITY_ERRORS}
    assert set(responses["200"]["content"]) == {"text/plain"}


@pytest.mark.parametrize("path", list(UTILITY_POSTS))
def test_embeddings_and_token_routes_document_bodies_and_statuses(
    serve_doc: dict[str, Any], path: str
) -> None:
    bodies, answer = UTILITY_POSTS[path]
    schema = request_schema(serve_doc, path)
    shapes = schema["anyOf"] if isinstance(bodies, tuple) else [schema]
    for body, shape in zip(bodies if isinstance(bodies, tuple) else (bodies,), shapes, strict=True):
        assert set(shape["properties"]) == set(body.model_fields)
        assert shape["additionalProperties"] is False
    responses = serve_doc["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", *UTILITY_ERRORS}
    assert set(json_body(responses["200"])["properties"]) == set(answer.model_fields)
    for status in UTILITY_ERRORS:
        assert_openai_error(responses[status])
    assert "Retry-After" in responses["503"]["headers"]


def test_embedding_input_and_tokenize_shapes_are_documented(serve_doc: dict[str, Any]) -> None:
    embeddings = request_schema(serve_doc, "/v1/embeddings")
    assert set(embeddings["required"]) == {"model", "input"}
    assert len(embeddings["properties"]["input"]["anyOf"]) == 4  # the four OpenAI shapes
    prompt, chat = request_schema(serve_doc, "/tokenize")["anyOf"]
    assert prompt["required"] == ["prompt"]
    assert chat["required"] == ["messages"]
    assert request_schema(serve_doc, "/detokenize")["required"] == ["tokens"]


def test_chat_messages_and_prompt_shapes_are_documented(serve_doc: dict[str, Any]) -> None:
    chat = request_schema(serve_doc, "/v1/chat/completions")
    assert set(chat["required"]) == {"model", "messages"}
    message = chat["properties"]["messages"]["items"]
    kinds = {tuple(b["properties"]["role"]["enum"]): b for b in message["anyOf"]}
    assert set(kinds) == {("system", "user", "developer"), ("assistant",), ("tool",)}
    assert "tool_call_id" in kinds[("tool",)]["required"]
    assert kinds[("assistant",)]["properties"]["tool_calls"]["anyOf"][0]["type"] == "array"
    tools = chat["properties"]["tools"]["anyOf"][0]["items"]
    assert tools["properties"]["function"]["properties"]["name"]["pattern"]
    formats = chat["properties"]["response_format"]["anyOf"][0]["oneOf"]
    assert {f["properties"]["type"]["const"] for f in formats} == {
        "text",
        "json_object",
        "json_schema",
    }
    assert "structured_outputs" in chat["properties"]
    prompt = request_schema(serve_doc, "/v1/completions")["properties"]["prompt"]
    assert len(prompt["anyOf"]) == 4  # text, texts, token ids, lists of token ids
    stop = chat["properties"]["stop"]["anyOf"]
    assert {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4} in stop


def bounds(schema: dict[str, Any]) -> dict[str, float]:
    """The numeric bounds of a property (of its number branch when it may be null)."""
    for branch in schema.get("anyOf", [schema]):
        found = {k: branch[k] for k in ("minimum", "maximum", "exclusiveMinimum") if k in branch}
        if found:
            return found
    return {}


SAMPLING = [
    "max_tokens", "temperature", "top_p", "top_k", "n", "seed", "presence_penalty",
    "frequency_penalty",
]  # fmt: skip
BOUNDED = {
    "/v1/chat/completions": [*SAMPLING, "max_completion_tokens", "top_logprobs"],
    "/v1/completions": [*SAMPLING, "logprobs", "best_of"],
}
FLOATS = {"temperature", "top_p", "presence_penalty", "frequency_penalty"}


@pytest.mark.parametrize(("path", "name"), [(p, n) for p, names in BOUNDED.items() for n in names])
def test_documented_limits_are_the_enforced_ones(
    served: TestClient[Any], serve_doc: dict[str, Any], path: str, name: str
) -> None:
    """At each documented bound the value is taken; one step past it is a 400 naming it."""
    limits = bounds(request_schema(serve_doc, path)["properties"][name])
    assert limits, f"{name} documents no bound"
    step = 1e-6 if name in FLOATS else 1
    cases = []
    if "minimum" in limits:
        cases += [(limits["minimum"], True), (limits["minimum"] - step, False)]
    if "maximum" in limits:
        cases += [(limits["maximum"], True), (limits["maximum"] + step, False)]
    if "exclusiveMinimum" in limits:
        cases += [(limits["exclusiveMinimum"] + step, True), (limits["exclusiveMinimum"], False)]
    for value, accepted in cases:
        extra: dict[str, Any] = {name: value}
        if name == "best_of" and accepted:
            extra["n"] = value  # best_of other than n is refused on its own
        response = served.post(path, json=BASE[path] | extra)
        if accepted:
            assert response.status_code == 200, (name, value, response.text)
        else:
            assert response.status_code == 400, (name, value, response.text)
            assert response.json()["error"]["param"] == name


@pytest.mark.parametrize("path", list(POSTS))
def test_router_posts_document_bodies_and_statuses(router_doc: dict[str, Any], path: str) -> None:
    schema = request_schema(router_doc, path)
    assert set(schema["properties"]) == set(POSTS[path].model_fields)
    responses = router_doc["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", *ROUTER_ERRORS}
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
    for status in ROUTER_ERRORS:
        assert_openai_error(responses[status])


def test_router_documents_experts_and_admin_routes(router_doc: dict[str, Any]) -> None:
    paths = router_doc["paths"]
    replicas = "/router/experts/{expert}/replicas"
    replica = replicas + "/{name}"
    assert set(paths) == {
        "/health", "/metrics", "/v1/models", *POSTS, "/router/experts", "/router/experts/{expert}",
        replicas, replica, replica + "/drain", replica + "/resume",
    }  # fmt: skip
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    experts = paths["/router/experts"]["get"]["responses"]
    assert set(experts) == {"200", "401"}
    assert "experts" in json_body(experts["200"])["required"]
    new_expert = paths["/router/experts"]["post"]
    assert set(new_expert["responses"]) == {"201", "400", "401", "403", "404", "413"}
    body = new_expert["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["name"]
    assert {"keywords", "examples", "replicas", "cost"} <= set(body["properties"])
    removed = paths["/router/experts/{expert}"]["delete"]["responses"]
    assert set(removed) == {"200", "400", "401", "403", "404"}
    add = paths[replicas]["post"]
    assert set(add["responses"]) == {"201", "400", "401", "403", "404", "413"}
    assert add["requestBody"]["content"]["application/json"]["schema"]["required"] == ["url"]
    for route, method in [(replica, "delete"), (replica + "/drain", "post")]:
        responses = paths[route][method]["responses"]
        assert set(responses) == {"200", "401", "403", "404"}
        for status in ("401", "403", "404"):
            assert_openai_error(responses[status])


def rule_cases(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], str | None]]:
    """(path, body change, None if taken else the param a 400 names), for the documented rules
    that are not numeric bounds."""
    chat = request_schema(doc, "/v1/chat/completions")["properties"]
    max_stop = chat["stop"]["anyOf"][1]["maxItems"]
    text = {"type": "text", "text": "a"}
    return [
        ("/v1/chat/completions", {"stop": ["s"] * max_stop}, None),
        ("/v1/chat/completions", {"stop": ["s"] * (max_stop + 1)}, "stop"),
        ("/v1/chat/completions", {"stop": ""}, "stop"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [text]}]}, None),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "tool", "content": "a"}]},
            "messages.0.tool_call_id",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "tool", "content": "a", "tool_call_id": "c"}]},
            None,
        ),
        ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {"logit_bias": {}}, None),
        ("/v1/chat/completions", {"logit_bias": {"5": 1.0}}, "logit_bias"),
        ("/v1/chat/completions", {"tools": []}, None),
        ("/v1/chat/completions", {"tools": [{"type": "function"}]}, "tools.0.function"),
        ("/v1/chat/completions", {"response_format": {"type": "text"}}, None),
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, None),
        ("/v1/chat/completions", {"response_format": {"type": "xml"}}, "response_format"),
        ("/v1/chat/completions", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("/v1/chat/completions", {"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ("/v1/chat/completions", {"temperature": "0.5"}, "temperature"),
        ("/v1/chat/completions", {"max_tokens": True}, "max_tokens"),
        ("/v1/chat/completions", {"max_tokens": 2.0}, None),  # JSON Schema: an integer
        ("/v1/chat/completions", {"unknown": 1}, "unknown"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {"prompt": [[]]}, "prompt"),
        ("/v1/completions", {"prompt": [[1, 2], [3]]}, None),
        ("/v1/completions", {"prompt": ["a", "b"], "stream": True}, "prompt"),
        ("/v1/completions", {"suffix": ""}, None),
        ("/v1/completions", {"suffix": "x"}, "suffix"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
    ]


def test_documented_rules_are_the_enforced_ones(
    served: TestClient[Any], serve_doc: dict[str, Any]
) -> None:
    for path, change, param in rule_cases(serve_doc):
        response = served.post(path, json=BASE[path] | change)
        if param is None:
            assert response.status_code == 200, (change, response.text)
        else:
            assert response.status_code == 400, (change, response.text)
            assert response.json()["error"]["param"] == param, (change, response.text)
