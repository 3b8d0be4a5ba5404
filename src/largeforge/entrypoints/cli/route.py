"""`largeforge route serve|explain|eval|calibrate`: the expert router."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from largeforge.domain.errors import ConfigError


def _container(config: Path, classifier: str | None = None) -> Any:
    from largeforge.container import RouterContainer
    from largeforge.entrypoints.http.local_expert import local_clients
    from largeforge.routing_config import load_router_settings

    settings = load_router_settings(config)
    if classifier is not None:
        settings = settings.model_copy(update={"classifier": classifier})
    container = RouterContainer(settings=settings)
    container.local_clients.override(local_clients(container.http_client))
    return container


def serve(
    config: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: list[str] | None = None,
) -> int:
    """Serve the router: one OpenAI-compatible endpoint in front of the experts.

    `model: "auto"` (the config's `name`) is routed by the query; an expert's name goes to that
    expert. Also: GET /router/experts (replicas, breakers, load), admin routes under
    /router/experts/... (with an admin key), /health and /metrics.

    Parameters
    ----------
    config
        Router YAML file (experts, replicas, classifier, strategy).
    host
        Interface to bind.
    port
        TCP port (0 picks a free one).
    api_key
        Accepted client key; repeat for several. Also LARGEFORGE_API_KEYS (comma-separated).
        Admin keys come from the config's admin_keys or LARGEFORGE_ADMIN_KEYS.
    """
    import structlog
    import uvicorn

    from largeforge.entrypoints.http.listen import bind
    from largeforge.entrypoints.http.router_app import SessionKeys, create_router_app

    container = _container(config)
    settings = container.settings()
    keys = list(api_key or []) + _env_keys("LARGEFORGE_API_KEYS")
    admin_keys = list(settings.admin_keys) + _env_keys("LARGEFORGE_ADMIN_KEYS")
    app = create_router_app(
        container.router(),
        api_keys=keys,
        admin_keys=admin_keys,
        health_interval_s=settings.health_interval_s,
        cascades=container.cascades(),
        sessions=SessionKeys(settings.affinity.header, settings.affinity.use_user_field),
    )
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}/v1"
    structlog.get_logger(__name__).info("router_listening", url=url, router=settings.name)
    print(f"Routing '{settings.name}' at {url}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)).run(
        sockets=[sock]
    )
    return 0


def explain(config: Path, query: str, *, json_output: bool = False) -> int:
    """Show how a query would be routed: every expert's keyword and embedding scores, the
    matched phrases, thresholds, and the decision of the configured classifier.

    Parameters
    ----------
    config
        Router YAML file.
    query
        The user message to route.
    json_output
        Print JSON instead of a table.
    """
    from largeforge.application.classifiers import KeywordClassifier, NeuralClassifier

    container = _container(config)
    policy = container.policy()
    decision = container.classifier().classify(query)
    keyword = KeywordClassifier(policy)
    kw_scores, matched = keyword.scores(query), keyword.matches(query)
    embeddings = container.embedding_model()
    nn_scores = NeuralClassifier(policy, embeddings).scores(query) if embeddings else {}
    rows = [
        {
            "expert": name,
            "keyword_score": round(kw_scores.get(name, 0.0), 4),
            "matched": matched.get(name, []),
            "embedding_score": round(nn_scores[name], 4) if name in nn_scores else None,
            "threshold": round(policy.threshold(name), 4),
            "decision_score": round(decision.scores.get(name, 0.0), 4),
        }
        for name in policy.names
    ]
    if json_output:
        print(json.dumps({"decision": _decision(decision), "experts": rows}, indent=2))
        return 0
    print(f"query: {query}")
    print(f"{'expert':<14}{'keyword':>9}{'embedding':>11}{'threshold':>11}  matched")
    for row in rows:
        emb = "-" if row["embedding_score"] is None else f"{row['embedding_score']:.4f}"
        print(
            f"{row['expert']:<14}{row['keyword_score']:>9.2f}{emb:>11}"
            f"{row['threshold']:>11.4f}  {', '.join(row['matched'])}"
        )
    print(f"-> {decision.expert} (stage: {decision.stage.value}; {decision.reason})")
    return 0


def evaluate(
    config: Path,
    labelled: Path,
    *,
    classifier: list[str] | None = None,
    cascade: str | None = None,
    max_tokens: int = 64,
    json_output: bool = False,
) -> int:
    """Accuracy of the classifiers on a labelled JSONL file ({"query", "expert"} per line):
    per-expert precision and recall, the confusion matrix, and the share sent to the default.

    With --cascade, the cascade against always-smallest and always-largest on requests with
    reference answers ({"query" or "messages", "reference", optional "match" (exact,
    contains, regex, json_schema), "ignore_case", and any chat field such as
    "response_format" or "max_tokens"} per line): accuracy, the share answered at each step,
    and cost (from each expert's cost per 1k tokens). The experts must be running.

    Parameters
    ----------
    config
        Router YAML file.
    labelled
        JSON Lines file of labelled queries (or requests with references, for --cascade).
    classifier
        Which classifiers to evaluate (default: keyword, neural and hybrid).
    cascade
        Evaluate this cascade of the config instead of the classifiers.
    max_tokens
        For --cascade: the answers' max_tokens where a row sets none.
    json_output
        Print JSON instead of tables.
    """
    if cascade is not None:
        from largeforge.entrypoints.cli.route_cascade import evaluate_cascade

        return evaluate_cascade(_container(config), cascade, labelled, max_tokens, json_output)
    from largeforge.application.route_evaluation import evaluate as run_eval

    items = _labelled(labelled)
    kinds = classifier or ["keyword", "neural", "hybrid"]
    base = _container(config)
    results = []
    for kind in kinds:
        container = _container(config, classifier=kind)
        container.embedding_model.override(base.embedding_model())  # load MiniLM once
        results.append(run_eval(container.classifier(), container.policy(), items))
    if json_output:
        print(json.dumps([_evaluation(r) for r in results], indent=2))
        return 0
    for result in results:
        _print_evaluation(result)
    return 0


def calibrate(
    config: Path,
    labelled: Path,
    *,
    output: Annotated[Path | None, Parameter(name=["--output", "-o"])] = None,
) -> int:
    """Per-expert embedding thresholds that maximise accuracy on a labelled file; prints them,
    and with --output writes a copy of the config that uses them.

    Parameters
    ----------
    config
        Router YAML file.
    labelled
        JSON Lines file of {"query": ..., "expert": ...}.
    output
        Where to write the calibrated config.
    """
    import yaml

    from largeforge.application.classifiers import NeuralClassifier
    from largeforge.application.route_evaluation import calibrate_thresholds

    items = _labelled(labelled)
    container = _container(config, classifier="neural")
    policy = container.policy()
    neural = NeuralClassifier(policy, container.embedding_model())
    thresholds = calibrate_thresholds(neural.scores, policy, items)
    for name, value in thresholds.items():
        print(f"{name}: {value}")
    if output is not None:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        for expert in data["experts"]:
            if expert["name"] in thresholds:
                expert["threshold"] = thresholds[expert["name"]]
        output.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        print(f"wrote {output}")
    return 0


def _labelled(path: Path) -> list[Any]:
    from largeforge.application.route_evaluation import LabelledQuery

    if not path.is_file():
        raise ConfigError(f"labelled file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(LabelledQuery(str(row["query"]), str(row["expert"])))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{path}:{number}: expected a JSON object with 'query' and 'expert'"
            ) from None
    if not items:
        raise ConfigError(f"{path}: no labelled queries")
    return items


def _env_keys(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


def _decision(decision: Any) -> dict[str, Any]:
    return {
        "expert": decision.expert,
        "stage": decision.stage.value,
        "reason": decision.reason,
        "scores": {k: round(v, 4) for k, v in decision.scores.items()},
    }


def _evaluation(result: Any) -> dict[str, Any]:
    return {
        "classifier": result.classifier,
        "accuracy": round(result.accuracy, 4),
        "correct": result.correct,
        "total": result.total,
        "default_share": round(result.default_share, 4),
        "per_expert": {
            name: {"precision": round(s.precision, 4), "recall": round(s.recall, 4)}
            | {"support": s.support}
            for name, s in result.per_expert.items()
        },
        "confusion": result.confusion,
    }


def _print_evaluation(result: Any) -> None:
    print(
        f"\n{result.classifier}: accuracy {result.accuracy:.1%} ({result.correct}/{result.total}),"
        f" sent to the default {result.default_share:.1%}"
    )
    names = list(result.per_expert)
    print(f"  {'expert':<12}{'precision':>10}{'recall':>8}{'support':>9}")
    for name, stats in result.per_expert.items():
        print(f"  {name:<12}{stats.precision:>10.2f}{stats.recall:>8.2f}{stats.support:>9}")
    print("  confusion (rows: true, columns: routed to)")
    print("  " + " " * 12 + "".join(f"{n[:9]:>10}" for n in names))
    for true in names:
        row = result.confusion[true]
        print(f"  {true:<12}" + "".join(f"{row[n]:>10}" for n in names))
