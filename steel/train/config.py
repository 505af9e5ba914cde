"""Typed training configuration: YAML recipes mapped onto dataclasses, plus `key=value` overrides.

A recipe is a YAML mapping whose top-level keys are the sections below (`model`, `data`,
`optimizer`, `schedule`, `batch`, `precision`, `system`, `checkpoint`, `logging`) plus a few
top-level fields (`run_dir`, `seed`, ...). Every field has a default taken from the Steel-LLM
report where the report gives one. The string under each field is its documentation, which
`steel pretrain --print-config` prints.

Unknown keys are errors that name the key and where it was written (the recipe file or the
command-line override), so a typo never falls back to a default silently.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    preset: str | None = None
    """Name of a Steel preset (`steel.model.presets.get_preset`), for example `steel-1b`."""

    config: str | None = None
    """Path to a `transformers` causal-LM `config.json` (or a directory holding one), for example a
    Qwen2 or Llama config. Set one of `preset` and `config`, or neither to take the architecture
    from `init_from`."""

    overrides: dict[str, Any] = field(default_factory=dict)
    """Config attributes set on top of the preset or config file, e.g. `{num_hidden_layers: 2}`."""

    init_from: str | None = None
    """Run directory, checkpoint or Hugging Face directory whose weights initialise the model
    (continued pretraining). Only the weights are taken: optimizer, schedule and data position
    start fresh. A resumed run ignores this field."""

    attn_implementation: str = "sdpa"
    """Attention kernel passed to `transformers` (`sdpa`, `eager`, `flash_attention_2`, ...)."""


@dataclass
class DataConfig:
    shards: list[str] = field(default_factory=list)
    """Token shard directories written by `steel data tokenize` (one dataset each). At the first start
    the run records them in `RUN_DIR/data_manifest.json` and trains on that copy from then on, so
    `steel data append RUN_DIR SHARDS` adds data that a resumed run picks up."""

    tokenizer: str | None = None
    """Tokenizer spec for `steel.tokenizer.load_tokenizer` ("qwen" or a directory). Default: the
    tokenizer the manifest names. Its identity must match the one the shards were made with."""

    block_size: int = 2048
    """Tokens per training sequence (the model sees `block_size` inputs and as many targets)."""

    seed: int = 0
    """Seed of the stream's shuffle. With the same seed and global batch the data order is the same
    for any world size."""

    weights: dict[str, float] | None = None
    """Sampling weight per dataset name of the run's data manifest (2 reads a dataset twice per
    epoch, 0.5 half of it); None gives every dataset weight 1."""


@dataclass
class OptimizerConfig:
    lr: float = 3e-4
    """Peak learning rate (AdamW), reached at the end of warmup."""

    beta1: float = 0.9
    """AdamW beta1."""

    beta2: float = 0.95
    """AdamW beta2."""

    eps: float = 1e-8
    """AdamW epsilon."""

    weight_decay: float = 0.05
    """Decoupled weight decay applied to the parameters that `weight_decay_scope` selects."""

    weight_decay_scope: str = "all"
    """Scope of weight decay: `all` parameters (as the released Steel-LLM run did) or `matrices`
    (weight matrices only, so norms, biases and the input embedding are not decayed)."""

    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""

    fused: bool | None = None
    """Use the fused AdamW kernel; None picks it on CUDA and the default kernel elsewhere."""


@dataclass
class ScheduleConfig:
    warmup_steps: int = 2000
    """Optimizer steps of linear warmup from 0 to `optimizer.lr`."""

    max_steps: int | None = None
    """Total optimizer steps. Either this or `max_tokens` must be set."""

    max_tokens: int | None = None
    """Total training tokens; the run takes ceil(max_tokens / tokens per step) steps."""

    decay: str = "cosine"
    """Shape after warmup: `cosine`, `linear` or `constant`."""

    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak (the report decays to 0)."""


@dataclass
class BatchConfig:
    global_batch_size: int = 512
    """Sequences per optimizer step over all ranks (the report: 8 GPUs x 8 x 8 accumulation)."""

    micro_batch_size: int = 8
    """Sequences per forward/backward pass on one rank. The trainer derives
    grad_accum_steps = global_batch_size / (micro_batch_size x world_size), which must be whole."""


@dataclass
class PrecisionConfig:
    dtype: str = "auto"
    """Compute dtype: `auto` (bfloat16 autocast on CUDA, float32 on CPU), `bfloat16` or `float32`.
    Master weights and optimizer state stay float32 in every case."""


@dataclass
class SystemConfig:
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda`."""

    compile: bool = False
    """Compile each decoder layer with `torch.compile`."""

    activation_checkpointing: bool = False
    """Recompute decoder-layer activations in the backward pass to save memory."""

    loss_chunk_size: int = 1024
    """Tokens per chunk of the output-layer cross-entropy, so that the logits of a whole micro-batch
    (tokens x vocabulary) are never materialised at once."""

    reshard_after_forward: bool = True
    """FSDP: free gathered parameters after forward (False keeps them until backward, the report's
    "no share param" setting: more memory, less communication)."""

    deterministic: bool = False
    """Use deterministic algorithms (bit-identical CPU resume needs this and a fixed thread count)."""

    num_threads: int | None = None
    """Intra-op CPU threads per process; None leaves PyTorch's default."""


@dataclass
class CheckpointConfig:
    interval: int = 1000
    """Save a checkpoint every this many optimizer steps (and always at the end)."""

    keep_last: int = 3
    """Number of most recent regular checkpoints to keep."""

    milestone_interval: int = 0
    """Checkpoints at multiples of this step are kept forever; 0 disables milestones."""

    resume: str = "never"
    """`never` starts fresh (an existing checkpoint is an error), `auto` continues from the latest
    complete checkpoint when there is one, `latest` requires one, or a checkpoint directory path.
    `auto` and `latest` skip a damaged checkpoint (a missing or truncated file) with a warning and
    continue from the newest intact one."""


@dataclass
class LoggingConfig:
    log_interval: int = 10
    """Optimizer steps between lines in `metrics.jsonl` and the log."""

    eval_interval: int = 1000
    """Optimizer steps between validation-loss measurements; 0 disables them."""

    eval_batches: int = 20
    """Micro-batches of the held-out split per validation measurement."""

    sample_interval: int = 1000
    """Optimizer steps between sample completions of `sample_prompt`; 0 disables them."""

    sample_prompt: str = "中国的首都是"
    """Fixed prompt whose greedy completion is logged during training."""

    sample_max_new_tokens: int = 32
    """Tokens generated for each sample completion."""

    progress_bar: bool = True
    """Show a tqdm progress bar on rank 0."""

    tensorboard: bool = False
    """Also write TensorBoard scalars under `RUN_DIR/tensorboard` (needs the `tensorboard` package)."""

    wandb: bool = False
    """Also log to Weights & Biases (needs the `wandb` package and its own login)."""

    wandb_project: str = "steel"
    """Weights & Biases project name."""


@dataclass
class TrainConfig:
    run_dir: str = "runs/pretrain"
    """Directory of the run: resolved config, checkpoints, metrics.jsonl and plots."""

    seed: int = 1234
    """Seed of model initialisation and of every other random choice outside the data stream."""

    max_consecutive_nonfinite: int = 5
    """Abort after this many optimizer steps in a row with a non-finite loss or gradient norm."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Raise ValueError listing every inconsistent setting at once."""
        problems = []
        if self.model.preset is not None and self.model.config is not None:
            problems.append("set only one of model.preset and model.config")
        if self.model.preset is None and self.model.config is None and self.model.init_from is None:
            problems.append("set model.preset, model.config or model.init_from (architecture and weights of a run)")
        if self.schedule.max_steps is None and self.schedule.max_tokens is None:
            problems.append("set schedule.max_steps or schedule.max_tokens")
        if self.schedule.max_steps is not None and self.schedule.max_steps < 1:
            problems.append(f"schedule.max_steps must be at least 1, got {self.schedule.max_steps}")
        if self.schedule.max_tokens is not None and self.schedule.max_tokens < 1:
            problems.append(f"schedule.max_tokens must be at least 1, got {self.schedule.max_tokens}")
        if self.schedule.decay not in ("cosine", "linear", "constant"):
            problems.append(f"schedule.decay must be cosine, linear or constant, not {self.schedule.decay!r}")
        if self.optimizer.weight_decay_scope not in ("all", "matrices"):
            problems.append(
                f"optimizer.weight_decay_scope must be all or matrices, not {self.optimizer.weight_decay_scope!r}"
            )
        if self.precision.dtype not in ("auto", "bfloat16", "float32"):
            problems.append(f"precision.dtype must be auto, bfloat16 or float32, not {self.precision.dtype!r}")
        if self.system.device not in ("auto", "cpu", "cuda"):
            problems.append(f"system.device must be auto, cpu or cuda, not {self.system.device!r}")
        for name in ("global_batch_size", "micro_batch_size"):
            if getattr(self.batch, name) < 1:
                problems.append(f"batch.{name} must be at least 1")
        if self.data.block_size < 1:
            problems.append("data.block_size must be at least 1")
        if self.checkpoint.interval < 1 or self.checkpoint.keep_last < 1:
            problems.append("checkpoint.interval and checkpoint.keep_last must be at least 1")
        if problems:
            raise ValueError("invalid training config:\n  - " + "\n  - ".join(problems))


def grad_accum_steps(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Return global_batch_size / (micro_batch_size x world_size), raising when it is not whole."""
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step != 0:
        raise ValueError(
            f"batch.global_batch_size={global_batch_size} is not a multiple of "
            f"batch.micro_batch_size x world size = {micro_batch_size} x {world_size} = {per_step}; "
            "change the global or micro batch size so that the gradient accumulation steps are whole"
        )
    return global_batch_size // per_step


# ---------------------------------------------------------------------------------------------
# Building a config from YAML and overrides


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = TrainConfig):
    """Build a `cls` config from a YAML recipe (optional) and `key=value` overrides.

    Overrides use dotted keys (`optimizer.lr=1e-3`, `model.overrides.num_hidden_layers=2`); the
    value is parsed as YAML and converted to the field's type. Errors name the key and its source.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        raw = _read_recipe(Path(path))
        # Recipe errors are reported against the recipe before any override is merged in.
        from_dict(cls, raw, source)

    for item in overrides or []:
        keys, value = _parse_override(cls, item)
        _set_dotted(raw, keys, value)

    return from_dict(cls, raw, source)


def _read_recipe(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"recipe not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory; give a YAML recipe file (see recipes/)") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error}); a recipe is a YAML file (see recipes/)") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML: {error}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping of sections, not {type(loaded).__name__}")
    return loaded or {}


def _parse_override(cls: type, item: str) -> tuple[list[str], Any]:
    """Parse and check one `key=value` override against `cls`, with errors that name the override."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"invalid override {item!r}: write key=value, e.g. optimizer.lr=1e-3")
    source = f"command-line override {item}"
    keys = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{source}: the value is invalid YAML ({problem}); quote a string or close the brackets") from None

    hint = _override_hint(cls, keys, source)
    if hint is not None:
        _convert(value, hint, ".".join(keys), source)
    return keys, value


def _override_hint(cls: type, keys: list[str], source: str) -> Any:
    """Return the type of the field that `keys` names, or None inside a free-form mapping; raise on a bad key."""
    hint: Any = cls
    for depth, key in enumerate(keys):
        hint = _without_none(hint)
        if typing.get_origin(hint) is dict or hint is Any:
            return None
        if not dataclasses.is_dataclass(hint):
            section = ".".join(keys[:depth])
            raise ValueError(f"{source}: {section} is a value, not a section; write {section}=VALUE")
        names = [f.name for f in dataclasses.fields(hint)]
        if key not in names:
            where = f" in section {'.'.join(keys[:depth])!r}" if depth else ""
            raise ValueError(f"{source}: unknown key {key!r}{where}{_did_you_mean(key, names)}")
        hint = typing.get_type_hints(hint)[key]
    return hint


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(options) == 1:
            return options[0]
    return hint


def _did_you_mean(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; known keys: {', '.join(names)}"


def from_dict(cls: type, data: dict[str, Any], source: str = "<dict>", prefix: str = ""):
    """Build dataclass `cls` from a nested dict, converting values to the field types."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, not {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        raise ValueError(
            f"{source}: unknown config key {prefix + str(unknown[0])!r}{where}"
            f"{_did_you_mean(str(unknown[0]), list(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}{name}", source)
    return cls(**kwargs)


def to_dict(config) -> dict[str, Any]:
    """Return the config as plain nested dicts (JSON- and YAML-safe)."""
    return dataclasses.asdict(config)


def to_yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def _set_dotted(target: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        node = target.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {'.'.join(keys)}: {key!r} is a value, not a section")
        target = node
    target[keys[-1]] = value


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the type `hint`, raising ValueError that names `key`."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, source, key + ".")

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key, source)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])

    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {key} must be a mapping, not {value!r}")
        value_type = args[1] if args else Any
        return {str(k): _convert(v, value_type, f"{key}.{k}", source) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {key} must be a list, not {value!r}")
        item_type = args[0] if args else Any
        return origin(_convert(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{source}: {key} must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"{source}: {key} must be an integer, not {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = math.nan
            if number.is_integer():
                return int(number)
        raise ValueError(f"{source}: {key} must be an integer, not {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{source}: {key} must be a number, not {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads `3e-4` (no decimal point) as a string, so numbers arrive here too.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{source}: {key} must be a number, not {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{source}: {key} must be a string, not {value!r}")
    return value


def field_docs(cls: type) -> dict[str, str]:
    """Return the documentation string written under each field of dataclass `cls` or its bases.

    A subclass that redefines a field (as the SFT and DPO sections do) replaces the base's text.
    """
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.cleandoc(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def describe(config) -> str:
    """Render a config as commented YAML: each field's documentation above its value.

    The output parses back (`yaml.safe_load`) to `to_dict(config)`. A list of dataclasses, such as
    the SFT and DPO `data.sources`, is written item by item, with the field documentation on the
    first item only. An empty list is followed by a commented default item.
    """
    lines: list[str] = []
    _describe_into(config, lines, indent="")
    return "\n".join(lines) + "\n"


def _describe_into(config, lines: list[str], indent: str, document: bool = True) -> None:
    docs = field_docs(type(config)) if document else {}
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for doc_line in docs.get(f.name, "").splitlines():
            lines.append(f"{indent}# {doc_line}")

        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            _describe_into(value, lines, indent + "  ", document)
            continue
        item_type = _dataclass_item_type(hints[f.name])
        if item_type is not None and isinstance(value, (list, tuple)):
            _describe_list(f.name, value, item_type, lines, indent, document)
            continue
        lines.append(indent + _flow_yaml(f.name, value))


def _describe_list(name: str, items, item_type: type, lines: list[str], indent: str, document: bool) -> None:
    """Append a list of dataclasses as a YAML block sequence of commented mappings."""
    if items:
        lines.append(f"{indent}{name}:")
        _append_items(items, lines, indent, document)
        return

    lines.append(f"{indent}{name}: []")
    if document:
        example: list[str] = []
        _append_items([item_type()], example, indent="", document=True)
        lines.append(f"{indent}# each item has these fields (defaults shown):")
        lines.extend(f"{indent}# {line}" for line in example)


def _append_items(items, lines: list[str], indent: str, document: bool) -> None:
    for index, item in enumerate(items):
        rendered: list[str] = []
        _describe_into(item, rendered, indent="", document=document and index == 0)
        # The documentation of the item's first field stays above the dash that starts the item.
        first = next(i for i, line in enumerate(rendered) if not line.startswith("#"))
        for position, line in enumerate(rendered):
            if position < first:
                lines.append(indent + line)
            elif position == first:
                lines.append(indent + "- " + line)
            else:
                lines.append(indent + "  " + line)


def _dataclass_item_type(hint: Any) -> type | None:
    """Return the item type of a `list[SomeDataclass]` hint (optionally `| None`), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(options) != 1:
            return None
        hint = options[0]
    if typing.get_origin(hint) in (list, tuple):
        args = typing.get_args(hint)
        if args and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _flow_yaml(name: str, value: Any) -> str:
    rendered = yaml.safe_dump({name: value}, allow_unicode=True, default_flow_style=True, width=1000)
    return rendered.strip().removeprefix("{").removesuffix("}")
