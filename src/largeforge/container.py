"""The composition root: the only module that names concrete adapters.

Build it from `Settings` (`Container.from_settings`), then ask it for use cases:
`container.run_training()`, `container.generation()`. Tests swap adapters with
`container.trainers.override({TrainingMethod.SFT: FakeModelTrainer()})` before anything is
resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dependency_injector import containers, providers

from largeforge.adapters.data.sources import FileRowSource
from largeforge.adapters.models.resolver import HfModelResolver
from largeforge.adapters.storage.eval_report import FilesystemEvalReportWriter
from largeforge.adapters.storage.run_files import FilesystemRunFiles
from largeforge.adapters.storage.runs import FilesystemRunStore, ReadOnlyRunStore, SkipMerger
from largeforge.adapters.system.clock import SystemClock
from largeforge.adapters.system.signals import StopRequested, stop_requested
from largeforge.application.cascade import CascadeService
from largeforge.application.classifiers import (
    HybridClassifier,
    HybridMode,
    KeywordClassifier,
    NeuralClassifier,
    QueryClassifier,
)
from largeforge.application.data import PrepareDataset, ReadPrompts
from largeforge.application.embeddings import EmbeddingEncoder, EmbedTexts
from largeforge.application.eval_plan import PlanEvaluation, TaskContext, TaskFactory
from largeforge.application.evaluation import EvaluateModels
from largeforge.application.experts import ClientFactory, ExpertManager
from largeforge.application.fidelity import CheckFidelity
from largeforge.application.generation import (
    GeneratePreferenceData,
    GenerateSftData,
    ResponseScorer,
)
from largeforge.application.generation_eval import GenerationEvalTask, read_generation_file
from largeforge.application.ports import (
    EmbeddingModel,
    EngineFactory,
    EvaluationTask,
    ExpertClient,
    InferenceEngine,
    ModelInspector,
    ModelResolver,
    ModelTrainer,
    PerplexityEvaluator,
    Quantizer,
    ReferenceGenerator,
    RowSource,
    RunStore,
    SequenceScorer,
    TokenizerFactsReader,
    ToolCallFormat,
)
from largeforge.application.quantization import QuantizeModel
from largeforge.application.router import RouterService
from largeforge.application.serving import TextGeneration
from largeforge.application.tool_eval import BUNDLED_FILE as BUNDLED_TOOLS_FILE
from largeforge.application.tool_eval import BUNDLED_PACKAGE as BUNDLED_TOOLS_PACKAGE
from largeforge.application.tool_eval import ToolCallEvalTask, read_tool_file
from largeforge.application.tool_generation import GenerateToolData
from largeforge.application.training import RunTraining
from largeforge.config import Settings
from largeforge.domain.affinity import SessionPins
from largeforge.domain.errors import ConfigError, ModelNotFoundError
from largeforge.domain.evaluation import TaskKind, TaskSpec
from largeforge.domain.generation import OverflowPolicy
from largeforge.domain.load_balancing import strategy_named
from largeforge.domain.quantization import QuantizationMethod
from largeforge.domain.routing import ReplicaSpec, RoutingPolicy
from largeforge.domain.training import TrainingMethod
from largeforge.routing_config import RouterSettings

__all__ = ["Container", "RouterContainer", "StopRequested", "stop_requested"]
"""`StopRequested` and `stop_requested`: the process-wide stop request a SIGTERM handler sets
and the trainers honour between steps (re-exported so entrypoints name no adapter)."""


def _trainers(device: str) -> dict[TrainingMethod, ModelTrainer]:
    """The trainer adapter of each training method: one line per method."""
    # They import torch only when training.
    from largeforge.adapters.trl import dpo, grpo, kto, reference_free, sft

    return {
        TrainingMethod.SFT: sft.TrlSftTrainer(device=device),
        TrainingMethod.DPO: dpo.TrlDpoTrainer(device=device),
        TrainingMethod.KTO: kto.TrlKtoTrainer(device=device),
        TrainingMethod.ORPO: reference_free.TrlReferenceFreeTrainer(TrainingMethod.ORPO, device),
        TrainingMethod.SIMPO: reference_free.TrlReferenceFreeTrainer(TrainingMethod.SIMPO, device),
        TrainingMethod.GRPO: grpo.TrlGrpoTrainer(device=device),
    }


def _hf_encoder_factory() -> Any:
    from largeforge.adapters.hf.chat_template import HfEncoderFactory

    return HfEncoderFactory()


def _peft_merger(rank: int) -> Any:
    if rank > 0:  # in a multi-process run, process 0 merges
        return SkipMerger()
    from largeforge.adapters.peft.merge import PeftLoraMerger

    return PeftLoraMerger()


def _run_store(root: str, rank: int) -> RunStore:
    store = FilesystemRunStore(root)
    return store if rank == 0 else ReadOnlyRunStore(store)


def _inference_engine(
    resolver: ModelResolver,
    backend: str,
    model: str,
    model_id: str,
    device: str,
    dtype: str,
    max_model_len: int | None,
    lora: dict[str, str],
    max_num_seqs: int,
    max_queue: int,
    enable_lora: bool = False,
    max_loras: int = 4,
    max_lora_rank: int = 16,
) -> InferenceEngine:
    model_dir = resolver.resolve(model)
    if backend == "vllm":
        from largeforge.adapters.vllm.engine import VllmInferenceEngine

        engine: InferenceEngine = VllmInferenceEngine(
            model_dir=model_dir,
            model_id=model_id,
            dtype=dtype,
            max_model_len=max_model_len,
            adapters=lora,
            max_num_seqs=max_num_seqs,
            max_queue=max_queue,
            adapter_loading=enable_lora,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
        )
        return engine
    from largeforge.adapters.hf.inference import TransformersInferenceEngine

    return TransformersInferenceEngine(
        model_dir=model_dir,
        model_id=model_id,
        device=device,
        dtype=dtype,
        max_model_len=max_model_len,
        adapters=lora,
        max_num_seqs=max_num_seqs,
        max_queue=max_queue,
        adapter_loading=enable_lora,
    )


def _generation_engine(resolver: ModelResolver, model: str) -> InferenceEngine:
    from largeforge.adapters.hf.inference import TransformersInferenceEngine

    return TransformersInferenceEngine(resolver.resolve(model), model)


def _likelihood_scorer(engine: InferenceEngine) -> ResponseScorer:
    from largeforge.adapters.hf.inference import EngineLikelihoodScorer

    return EngineLikelihoodScorer(engine)  # type: ignore[arg-type]  # a transformers engine


def _lora_merger(tolerance: float = 1e-3) -> Any:  # a PeftLoraMerger (last_max_abs_diff)
    from largeforge.adapters.peft.merge import PeftLoraMerger

    return PeftLoraMerger(tolerance=tolerance)


def _host_probe() -> Any:
    from largeforge.adapters.system.probes import HostProbe

    return HostProbe()


def _quantizers(device: str) -> dict[QuantizationMethod, Callable[[], Quantizer]]:
    def llm_compressor() -> Quantizer:
        from largeforge.adapters.quantization.llm_compressor import LlmCompressorQuantizer

        return LlmCompressorQuantizer(device=device)

    return {QuantizationMethod.AWQ: llm_compressor, QuantizationMethod.GPTQ: llm_compressor}


def _model_inspector() -> ModelInspector:
    from largeforge.adapters.quantization.inspect import HfModelInspector

    return HfModelInspector()


def _perplexity_evaluator(device: str) -> PerplexityEvaluator:
    from largeforge.adapters.hf.perplexity import TransformersPerplexityEvaluator

    return TransformersPerplexityEvaluator(device=device)


def _sequence_scorer(device: str) -> SequenceScorer:
    from largeforge.adapters.hf.sequence_scores import TransformersSequenceScorer

    return TransformersSequenceScorer(device=device)


def _variant_engines() -> EngineFactory:
    from largeforge.adapters.hf.variant_engines import TransformersEngineFactory

    return TransformersEngineFactory()


def _eval_task_factories(
    device: str, rows: RowSource, engines: EngineFactory
) -> dict[TaskKind, TaskFactory]:
    """How each `--tasks` kind other than heldout becomes a task (built before any model
    loads, so a bad file or task name fails in seconds)."""

    def generate(spec: TaskSpec, context: TaskContext) -> EvaluationTask:
        assert spec.argument is not None  # parse_task requires the file
        cases = read_generation_file(rows, spec.argument)
        return GenerationEvalTask(spec.label, cases, engines)

    def tools(spec: TaskSpec, context: TaskContext) -> EvaluationTask:
        path = spec.argument or _bundled(BUNDLED_TOOLS_PACKAGE, BUNDLED_TOOLS_FILE)
        cases = read_tool_file(rows, path)
        grammar = spec.kind is TaskKind.TOOLS
        return ToolCallEvalTask(spec.label, cases, engines, _tool_call_format, grammar=grammar)

    def harness(spec: TaskSpec, context: TaskContext) -> EvaluationTask:
        from largeforge.adapters.lm_eval import LmEvalTask

        assert spec.argument is not None  # parse_task requires the name or file
        task = LmEvalTask(spec.argument, device=device)
        task.validate()  # an unknown task or a dataset only the hub has fails here
        return task

    return {
        TaskKind.GENERATE: generate,
        TaskKind.TOOLS: tools,
        TaskKind.TOOLS_FREE: tools,
        TaskKind.LM_EVAL: harness,
    }


def _bundled(package: str, name: str) -> str:
    from importlib import resources

    return str(resources.files(package) / name)


def _tokenizer_facts() -> TokenizerFactsReader:
    from largeforge.adapters.hf.tokenizer_facts import HfTokenizerFactsReader

    return HfTokenizerFactsReader()


def _reference_generator() -> ReferenceGenerator:
    from largeforge.adapters.hf.reference_generation import TransformersReferenceGenerator

    return TransformersReferenceGenerator(dtype="float32")  # as the served probe (fp32)


def _held_out_text() -> list[str]:
    from importlib import resources

    text = (resources.files("largeforge.resources.text") / "heldout_en.txt").read_text("utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _engines(engine: InferenceEngine) -> list[InferenceEngine]:
    return [engine]


def _embedding_dir(resolver: ModelResolver, ref: str | None) -> str | None:
    """`serve --embedding-model`: the packaged MiniLM's alias, a local directory or a hub id."""
    if ref is None:
        return None
    from largeforge.adapters.embeddings.transformers import MINILM_ALIAS, packaged_minilm

    if ref == MINILM_ALIAS:
        return str(packaged_minilm())
    try:
        return resolver.resolve(ref)
    except ModelNotFoundError as exc:
        reason = str(exc).partition("; known aliases")[0]  # the chat models' aliases
        raise ModelNotFoundError(
            f"embedding {reason}; the packaged all-MiniLM-L6-v2 is '{MINILM_ALIAS}'"
        ) from None


def _embedding_encoders(model_dir: str | None, model_id: str | None) -> dict[str, EmbeddingEncoder]:
    if model_dir is None or model_id is None:
        return {}
    from largeforge.adapters.embeddings.transformers import TransformersEmbeddingModel

    # threads=None: torch's thread count is process-wide; the chat engine shares it
    return {model_id: TransformersEmbeddingModel(model_dir, threads=None)}


def _tool_call_format(name: str) -> ToolCallFormat:
    from largeforge.adapters.tools import tool_call_format

    return tool_call_format(name)


def _device_for_quantization() -> str:
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # pragma: no cover - torch is a dependency
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_quant_device = providers.Callable(_device_for_quantization)


class Container(containers.DeclarativeContainer):
    """Adapters and use cases, wired from `config` (a `Settings` dump)."""

    config = providers.Configuration()

    clock = providers.Singleton(SystemClock)
    model_resolver = providers.Singleton(HfModelResolver, home=config.home)
    row_source = providers.Singleton(FileRowSource)
    encoder_factory = providers.Singleton(_hf_encoder_factory)
    prepare_dataset = providers.Factory(PrepareDataset, source=row_source)
    read_prompts = providers.Factory(ReadPrompts, prepare=prepare_dataset)
    trainers = providers.Singleton(_trainers, device=config.run.device)
    merger = providers.Singleton(_peft_merger, rank=config.process_rank)
    run_store = providers.Singleton(
        _run_store, root=config.run.output_dir, rank=config.process_rank
    )
    tokenizer_facts = providers.Singleton(_tokenizer_facts)
    """Reads `TokenizerFacts` of model directories and the record a run keeps of them."""
    reference_generator = providers.Singleton(_reference_generator)
    check_fidelity = providers.Factory(
        CheckFidelity,
        facts=tokenizer_facts,
        resolver=model_resolver,
        reference=reference_generator,
    )
    """`largeforge eval --fidelity`: `check_fidelity(served=...)`, the served probe being the
    entrypoint's (it runs `largeforge serve`'s own app)."""

    run_training = providers.Factory(
        RunTraining,
        resolver=model_resolver,
        prepare=prepare_dataset,
        encoders=encoder_factory,
        trainers=trainers,
        merger=merger,
        store=run_store,
        clock=clock,
        facts=tokenizer_facts,
    )

    inference_engine = providers.Singleton(
        _inference_engine,
        resolver=model_resolver,
        backend=config.serve.backend,
        model=config.serve.model,
        model_id=config.serve.model_id,
        device=config.serve.device,
        dtype=config.serve.dtype,
        max_model_len=config.serve.max_model_len,
        lora=config.serve.lora,
        max_num_seqs=config.serve.max_num_seqs,
        max_queue=config.serve.max_queue,
        enable_lora=config.serve.enable_lora,
        max_loras=config.serve.max_loras,
        max_lora_rank=config.serve.max_lora_rank,
    )
    engines = providers.Singleton(_engines, engine=inference_engine)
    generation = providers.Singleton(
        TextGeneration,
        engines=engines,
        overflow=providers.Factory(OverflowPolicy, config.serve.on_overflow),
        tool_formats=providers.Object(_tool_call_format),
        tool_call_parser=config.serve.tool_call_parser,
    )

    embedding_model_dir = providers.Singleton(
        _embedding_dir, resolver=model_resolver, ref=config.serve.embedding_model
    )
    embedding_encoders = providers.Singleton(
        _embedding_encoders, model_dir=embedding_model_dir, model_id=config.serve.embedding_model
    )
    """Embedding models served on /v1/embeddings, by model id (none without one configured)."""
    embeddings = providers.Singleton(EmbedTexts, encoders=embedding_encoders)

    generate_sft_data = providers.Factory(GenerateSftData)
    """Self-instruct over an engine: `generate_sft_data(engine=..., max_tokens=...)`."""
    generate_preference_data = providers.Factory(GeneratePreferenceData)
    """Sampled, self-scored pairs: `generate_preference_data(engine=..., scorer=...)`."""
    generate_tool_data = providers.Factory(
        GenerateToolData, tool_formats=providers.Object(_tool_call_format)
    )
    """Tool-use conversations, calls under the grammar: `generate_tool_data(engine=...)`."""
    generation_engine = providers.Factory(_generation_engine, resolver=model_resolver)
    """The local batching engine that writes synthetic data: `generation_engine(model=...)`."""
    response_scorer = providers.Factory(_likelihood_scorer)
    """Ranks sampled answers by the model's own likelihood: `response_scorer(engine=...)`."""
    lora_merger = providers.Factory(_lora_merger)
    """`largeforge merge`'s verified merger: `lora_merger(tolerance=...)`."""
    run_reader = providers.Factory(FilesystemRunStore)
    """A `RunStore` over the runs under a directory: `run_reader(root=...)`."""
    host_probe = providers.Singleton(_host_probe)
    """The device, matmul peak and default model, as `largeforge doctor` reports them."""

    quantizers = providers.Singleton(_quantizers, device=_quant_device)
    model_inspector = providers.Singleton(_model_inspector)
    perplexity_evaluator = providers.Singleton(_perplexity_evaluator, device=_quant_device)
    quantize_model = providers.Factory(
        QuantizeModel,
        resolver=model_resolver,
        quantizers=quantizers,
        inspector=model_inspector,
        evaluator=perplexity_evaluator,
        prepare=prepare_dataset,
        encoders=encoder_factory,
        held_out=providers.Object(_held_out_text),
    )

    sequence_scorer = providers.Singleton(_sequence_scorer, device=_quant_device)
    run_files = providers.Singleton(FilesystemRunFiles)
    variant_engines = providers.Singleton(_variant_engines)
    """Inference engines for evaluated variants (the transformers engine `serve` uses)."""
    eval_task_factories = providers.Singleton(
        _eval_task_factories, device=_quant_device, rows=row_source, engines=variant_engines
    )
    plan_evaluation = providers.Factory(
        PlanEvaluation,
        resolver=model_resolver,
        runs=run_files,
        prepare=prepare_dataset,
        encoders=encoder_factory,
        scorer=sequence_scorer,
        factories=eval_task_factories,
    )
    """`largeforge eval`: REF, --tasks and --compare into variants and ready tasks."""
    evaluate_models = providers.Factory(
        EvaluateModels, writer=providers.Singleton(FilesystemEvalReportWriter)
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Container:
        """A container configured from `settings` (defaults when omitted)."""
        settings = settings or Settings()
        container = cls()
        data = settings.model_dump()
        data["serve"]["model_id"] = settings.serve.model_id
        container.config.from_dict(data)
        return container


def _embedding_model(classifier: str, model_dir: str | None) -> EmbeddingModel | None:
    if classifier == "keyword":
        return None
    from largeforge.adapters.embeddings.transformers import TransformersEmbeddingModel

    return TransformersEmbeddingModel(model_dir)


def _classifier(
    policy: RoutingPolicy, kind: str, mode: str, embeddings: EmbeddingModel | None
) -> QueryClassifier:
    keyword = KeywordClassifier(policy)
    if kind == "keyword":
        return keyword
    if embeddings is None:
        raise ConfigError(f"the {kind} classifier needs an embedding model")
    neural = NeuralClassifier(policy, embeddings)
    if kind == "neural":
        return neural
    return HybridClassifier(keyword, neural, policy, HybridMode(mode))


def _http_client(
    url: str, connect_timeout_s: float, request_timeout_s: float, api_key: str | None = None
) -> ExpertClient:
    from largeforge.adapters.http.expert_client import HttpExpertClient

    return HttpExpertClient(
        url,
        api_key=api_key,
        connect_timeout_s=connect_timeout_s,
        request_timeout_s=request_timeout_s,
    )


def _client_factory(
    http: Callable[..., ExpertClient], local: ClientFactory | None
) -> ClientFactory:
    def make(spec: ReplicaSpec) -> ExpertClient:
        if spec.url is not None:
            return http(url=spec.url, api_key=spec.api_key)
        if local is None:
            raise ConfigError(f"replica {spec.name}: local replicas need a local client factory")
        return local(spec)

    return make


def _session_pins(settings: RouterSettings) -> SessionPins | None:
    return SessionPins(settings.affinity.policy()) if settings.affinity.enabled else None


class RouterContainer(containers.DeclarativeContainer):
    """The expert router, wired from `RouterSettings`. Tests override `embedding_model` and
    `client_factory`; `local_clients` serves `local:` replicas (the entrypoint sets it, since
    a local replica runs the entrypoint's own app, reached through `http_client`)."""

    settings = providers.Dependency(instance_of=RouterSettings)
    local_clients: providers.Object[ClientFactory | None] = providers.Object(None)

    policy = providers.Singleton(lambda s: s.policy(), settings)
    breaker_policy = providers.Singleton(lambda s: s.breaker_policy(), settings)
    embedding_model = providers.Singleton(
        _embedding_model,
        classifier=providers.Callable(lambda s: s.classifier, settings),
        model_dir=providers.Callable(lambda s: s.embedding_model, settings),
    )
    classifier_for = providers.Factory(
        _classifier,
        kind=providers.Callable(lambda s: s.classifier, settings),
        mode=providers.Callable(lambda s: s.hybrid_mode, settings),
        embeddings=embedding_model,
    )
    """The classifier of a policy: `classifier_for(policy=...)`."""
    classifier = providers.Singleton(classifier_for, policy=policy)
    http_client = providers.Factory(
        _http_client,
        connect_timeout_s=providers.Callable(lambda s: s.connect_timeout_s, settings),
        request_timeout_s=providers.Callable(lambda s: s.request_timeout_s, settings),
    )
    """An OpenAI-API client for a base URL: `http_client(url=..., api_key=...)`."""
    client_factory = providers.Singleton(
        _client_factory, http=http_client.provider, local=local_clients
    )
    manager = providers.Singleton(
        ExpertManager,
        policy=policy,
        client_factory=client_factory,
        breaker_policy=breaker_policy,
    )
    strategy = providers.Singleton(lambda s: strategy_named(s.strategy), settings)
    router = providers.Singleton(
        RouterService,
        name=providers.Callable(lambda s: s.name, settings),
        classifier=classifier,
        manager=manager,
        strategy=strategy,
        max_wait_s=providers.Callable(lambda s: s.max_wait_s, settings),
        pins=providers.Callable(_session_pins, settings),
        classifier_for=classifier_for.provider,
    )
    cascades = providers.Singleton(
        CascadeService,
        router=router,
        cascades=providers.Callable(lambda s: s.cascade_list(), settings),
    )
