"""The router app's OpenAPI description: each route's `operation_class`.

The router takes the OpenAI bodies `largeforge serve` takes (the expert it routes to validates
them and its refusal is passed through, hence `4XX`) and answers what the expert answered.
"""

from __future__ import annotations

from largeforge.entrypoints.http import openapi_models as models
from largeforge.entrypoints.http.openapi import answer, completion, documented
from largeforge.entrypoints.http.schemas import ChatCompletionBody, CompletionBody
from largeforge.routing_config import ExpertSettings

ROUTED_ERRORS = (400, 401, 404, 413, 503, "4XX")
ADMIN_ERRORS = (401, 403, 404)
PROMETHEUS = "text/plain; version=0.0.4"

HEALTH = documented(
    {
        200: answer("Some replica of the default expert is healthy.", models.RouterHealth),
        503: answer("No replica of the default expert is healthy.", models.RouterHealth),
    }
)
METRICS = documented(
    {200: answer("Prometheus text exposition.", media={PROMETHEUS: {"type": "string"}})}
)
MODELS = documented(
    {200: answer("The router's name, then every expert.", models.ModelList)}, errors=(401,)
)
CHAT = documented(
    {200: completion(models.RelayedCompletion, models.RelayedChunk)},
    errors=ROUTED_ERRORS,
    request=ChatCompletionBody,
)
COMPLETIONS = documented(
    {200: completion(models.RelayedCompletion, models.RelayedChunk)},
    errors=ROUTED_ERRORS,
    request=CompletionBody,
)
EXPERTS = documented(
    {200: answer("Experts, replicas, breakers and load.", models.ExpertsView)}, errors=(401,)
)
ADD_REPLICA = documented(
    {201: answer("The replica was added.", models.Replica)},
    errors=(400, *ADMIN_ERRORS, 413),
    request=models.NewReplica,
)
REMOVE_REPLICA = documented(
    {200: answer("The replica was drained and removed.", models.Removed)}, errors=ADMIN_ERRORS
)
REPLICA_STATE = documented(
    {200: answer("The replica's new state.", models.Replica)}, errors=ADMIN_ERRORS
)
ADD_EXPERT = documented(
    {201: answer("The expert was added; its replicas and their state.", models.Expert)},
    errors=(400, *ADMIN_ERRORS, 413),
    request=ExpertSettings,
)
REMOVE_EXPERT = documented(
    {200: answer("The expert was drained and removed.", models.RemovedExpert)},
    errors=(400, *ADMIN_ERRORS),
)
