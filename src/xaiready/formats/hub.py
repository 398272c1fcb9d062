"""Hugging Face model folders: transformers ``save_pretrained`` and timm ``save_for_hf`` / ``push_to_hf_hub``.

Policy:

* Only files inside the folder are read (``config.json``, the weights, ``preprocessor_config.json``;
  the shards an index names must be plain file names there). Links out of the folder are refused,
  except the Hugging Face cache's own ``snapshots/REV -> blobs`` layout. Nothing is downloaded:
  the model is built from the config and the weights are handed to transformers as a state dict, so
  from_pretrained never resolves a path or a repository of its own (no adapters, no
  ``transformers_weights`` file name, no pretrained backbone).
* Weights come from safetensors, or a ``pytorch_model.bin`` read by the same safe path as any state
  dict (``torch.load(weights_only=True)``); a bin that pickles objects needs ``--trust``.
* Architectures come from transformers or timm themselves. A config with ``auto_map`` names Python
  code shipped in the folder (``trust_remote_code``): refused without ``--trust``, and even with it
  only code files inside the folder are imported (an entry naming another repository is refused).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .._lazy import import_optional
from ..errors import (
    ArchMismatchError,
    CorruptError,
    MissingCodeError,
    UnsafePathError,
    UnsupportedError,
    UntrustedError,
    first_line,
)
from ..model import ModelHandle, Source
from .hf_build import FMT, from_state_dict, import_hub_library, quiet
from .sniff import Sniffed, check_inside, contradicts_extension, hub_library, read_hub_json, sniff

# Task heads tried in this order when config.json does not say which class it was saved from (or says
# one transformers files under several); the base model (no head) last.
_AUTO_ORDER = (("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
               ("AutoModelForSemanticSegmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
               ("AutoModelForDepthEstimation", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES"),
               ("AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
               ("AutoModel", "MODEL_MAPPING_NAMES"))
# Config switches that make a model's constructor fetch weights of its own (the folder holds them all).
_FETCHING_SWITCHES = ("use_pretrained_backbone",)


def load(sniffed: Sniffed, *, arch: str | None, arch_kwargs, trust: bool, output, **_) -> ModelHandle:
    folder = sniffed.path
    config = read_hub_json(folder / "config.json")
    library = hub_library(config)
    if arch is None and library == "transformers" and config.get("auto_map"):
        _refuse_remote_code(folder, config["auto_map"], trust)  # before any framework is imported
    torch = import_optional("torch")
    from .carried import hf_preprocessing, torch_handle
    from .pytorch import build_torch_arch, fit_weights, load_weights, output_notes

    plan = None
    if arch is None and library == "transformers":  # refuses remote code before a weight is read
        plan = _plan_transformers(folder, config, trust)
    state, notes = _read_state(torch, folder, sniffed.members, trust)
    if arch is not None:
        module = build_torch_arch(torch, arch, arch_kwargs, folder, FMT)
        module, fitted = fit_weights(torch, module, state, folder, FMT)
        notes += [f"architecture from --arch {arch}, weights from the folder"] + fitted
    elif library == "timm":
        module = _build_timm(folder, config)
        notes += load_weights(torch, module, state, folder, FMT)
        notes.append(f"timm model '{config['architecture']}' built from config.json")
    else:
        cls, model_config, how = plan
        module, loaded = from_state_dict(cls, model_config, state, path=folder)
        notes += [how] + loaded
    processor, more = _processor_config(folder)
    notes += more
    channels = getattr(getattr(module, "config", None), "num_channels", None) or 3
    prep = hf_preprocessing(processor, channels) if processor else None
    return torch_handle(module, Source(str(folder), FMT, "torch"), output=output,
                        notes=notes + output_notes(module, output), preprocessing=prep)


# ---- weights ----------------------------------------------------------------------------------------------
def _read_state(torch, folder: Path, members: list[str], trust: bool) -> tuple[dict, list[str]]:
    """All tensors of the folder's best weight file (safetensors first), or of every shard its index names."""
    from .pytorch import _find_state_dict, read_weights

    name = members[0]
    files = _shards(folder, name) if name.endswith(".index.json") else [name]
    state: dict = {}
    formats = set()
    for file in files:
        path = check_inside(folder, folder / file)
        sniffed = sniff(path)  # by content: a pickle that imports code is told apart from a plain state dict
        contradiction = contradicts_extension(sniffed)
        if contradiction:
            raise CorruptError(contradiction, path=str(path), format=sniffed.format,
                               hint="re-save the model with save_pretrained")
        state.update(_find_state_dict(torch, read_weights(torch, sniffed, trust), path, sniffed.format))
        formats.add(sniffed.name)
    what = f"{len(files)} shards" if len(files) > 1 else files[0]
    return state, [f"weights read from {what} ({', '.join(sorted(formats))})"]


def _shards(folder: Path, index_name: str) -> list[str]:
    index = read_hub_json(folder / index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptError(f"{index_name} has no weight_map", path=str(folder), format=FMT,
                           hint="re-save the model with save_pretrained")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", "..") or "\\" in shard:
            raise UnsafePathError(f"{index_name} names the shard '{shard}', which is not a file of the folder",
                                  path=str(folder), format=FMT,
                                  hint="the index is malformed or hostile; shards are plain file names")
        if not (folder / shard).is_file():
            raise CorruptError(f"{index_name} names the shard '{shard}', which is missing", path=str(folder),
                               format=FMT, hint="copy every shard into the folder")
    return shards


def _processor_config(folder: Path) -> tuple[dict | None, list[str]]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None, []
    try:
        return read_hub_json(path), []
    except (CorruptError, UnsupportedError) as exc:  # damaged preprocessing settings do not stop the model
        return None, [f"preprocessor_config.json ignored: {exc.message}"]


# ---- timm -------------------------------------------------------------------------------------------------
def _build_timm(folder: Path, config: dict):
    timm = import_hub_library("timm")
    name = config["architecture"]
    if not timm.is_model(name):
        raise UnsupportedError(f"config.json names the timm architecture '{name}', which timm {timm.__version__} "
                               "does not have", path=str(folder), format=FMT, hint="upgrade timm")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _timm_reads_local_dirs():  # timm's own reading of the folder's config.json; pretrained=False
                return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=False)
            cfg = config.get("pretrained_cfg") or {}
            kwargs = dict(config.get("model_args") or {})
            if config.get("num_classes") is not None:
                kwargs.setdefault("num_classes", config["num_classes"])
            return timm.create_model(name, pretrained=False, pretrained_cfg=cfg or None, **kwargs)
    except Exception as exc:  # timm's constructors raise anything on a bad config
        raise ArchMismatchError(f"timm could not build '{name}' from config.json: {type(exc).__name__}: "
                                f"{first_line(exc)}", path=str(folder), format=FMT,
                                hint="re-save the model with timm's save_for_hf") from exc


def _timm_reads_local_dirs() -> bool:
    try:
        from timm.models._hub import load_model_config_from_path  # noqa: F401
    except ImportError:
        return False
    return True


# ---- transformers -----------------------------------------------------------------------------------------
def _plan_transformers(folder: Path, config: dict, trust: bool):
    """(model class, config object, note): built-in classes only, or the folder's own code with ``trust``."""
    transformers = import_hub_library("transformers")
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
        raise UnsupportedError(f"the checkpoint is quantized ({method}); xaiready explains float models",
                               path=str(folder), format=FMT, hint="use the unquantized model's folder")
    auto_map = config.get("auto_map")
    if auto_map:
        _refuse_remote_code(folder, auto_map, trust)
        return _plan_remote(transformers, folder, config, auto_map)
    return _plan_builtin(transformers, folder, config)


def _refuse_remote_code(folder: Path, auto_map, trust: bool) -> None:
    """auto_map means trust_remote_code: refused without ``trust`` (exit 4, like every format whose loading
    runs code from the model), and an entry naming code outside the folder is refused even with it."""
    refs = _code_refs(folder, auto_map)
    if not trust:
        raise UntrustedError(f"config.json's auto_map names Python code shipped with the model "
                             f"({', '.join(refs[:2])}), which runs when it is loaded (trust_remote_code)",
                             path=str(folder), format=FMT,
                             hint="pass --trust only if you trust its author; a folder of a built-in "
                                  "transformers architecture (no auto_map) loads without it")


def _code_refs(folder: Path, auto_map) -> list[str]:
    """The ``module.Class`` references of auto_map, each checked to name a .py file inside the folder."""
    if not isinstance(auto_map, dict):
        raise CorruptError("config.json's auto_map is not an object", path=str(folder), format=FMT)
    refs = []
    for value in auto_map.values():
        for ref in value if isinstance(value, (list, tuple)) else [value]:
            if ref is None:
                continue
            if not isinstance(ref, str) or "--" in ref or ref.count(".") != 1 or "/" in ref or "\\" in ref:
                raise UnsafePathError(f"config.json's auto_map entry '{ref}' names code outside the model's "
                                      "folder", path=str(folder), format=FMT,
                                      hint="refused even with --trust: only code files inside the folder are read")
            refs.append(ref)
    return refs


def _model_ref(auto_map: dict) -> tuple[str | None, str | None]:
    for key in [a for a, _ in _AUTO_ORDER] + sorted(k for k in auto_map if k.startswith("AutoModel")):
        value = auto_map.get(key)
        ref = next((v for v in value if v), None) if isinstance(value, (list, tuple)) else value
        if isinstance(ref, str):
            return key, ref
    return None, None


def _plan_remote(transformers, folder: Path, config: dict, auto_map: dict):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    key, model_ref = _model_ref(auto_map)
    if model_ref is None:
        raise UnsupportedError("config.json's auto_map names no model class (no AutoModel* entry)",
                               path=str(folder), format=FMT, hint="re-save the model with save_pretrained")
    config_ref = auto_map.get("AutoConfig")
    classes = []
    for ref in (model_ref, config_ref):
        if ref is None:
            classes.append(None)
            continue
        check_inside(folder, folder / f"{ref.split('.')[0]}.py")
        try:
            with quiet(transformers):
                classes.append(get_class_from_dynamic_module(ref, str(folder), local_files_only=True))
        except Exception as exc:  # the folder's own code failed to import: say so in one line
            raise MissingCodeError(f"importing '{ref}' from the folder failed: {type(exc).__name__}: "
                                   f"{first_line(exc)}", path=str(folder), format=FMT,
                                   hint="the folder's code must import with this transformers") from exc
    cls, config_cls = classes
    config_cls = config_cls or _builtin_config_class(config) or cls.config_class
    return cls, _config(config_cls, config, folder), (f"{cls.__name__} from the folder's own code "
                                                      f"(auto_map {key}; loaded with --trust)")


def _builtin_config_class(config: dict):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        return None
    try:
        return CONFIG_MAPPING[model_type]
    except (KeyError, ValueError):
        return None


def _plan_builtin(transformers, folder: Path, config: dict):
    from transformers.models.auto import modeling_auto

    model_type = config.get("model_type")
    declared = next((a for a in config.get("architectures") or [] if isinstance(a, str)), None)
    version = transformers.__version__
    config_cls = _builtin_config_class(config)
    if isinstance(model_type, str) and config_cls is None:
        raise UnsupportedError(f"config.json's model_type '{model_type}' is not one transformers {version} knows",
                               path=str(folder), format=FMT,
                               hint="upgrade transformers; a model shipping its own code declares it in auto_map "
                                    "(and needs --trust)")
    candidates = []
    for auto_name, mapping_name in _AUTO_ORDER:
        names = getattr(modeling_auto, mapping_name, {}).get(model_type) if model_type else None
        for name in [names] if isinstance(names, str) else list(names or ()):
            candidates.append((auto_name, name))
    chosen = next(((a, n) for a, n in candidates if n == declared), None) if declared else None
    if chosen is None and declared and _builtin_model_class(transformers, declared) is not None:
        chosen = (None, declared)
    if chosen is None and candidates:
        chosen = candidates[0]
    if chosen is None:
        what = f"the architecture '{declared}'" if declared else f"a model class for model_type '{model_type}'"
        raise UnsupportedError(f"transformers {version} has no {what}", path=str(folder), format=FMT,
                               hint="upgrade transformers; a model shipping its own code declares it in auto_map "
                                    "(and needs --trust)")
    auto_name, name = chosen
    cls = _builtin_model_class(transformers, name)
    if cls is None:
        raise UnsupportedError(f"transformers {version} cannot import {name}", path=str(folder), format=FMT,
                               hint="install what that model needs, or upgrade transformers")
    config_cls = config_cls or cls.config_class
    how = f"{name} (transformers {version}, " + (f"via {auto_name})" if auto_name else "as config.json declares)")
    if declared and declared != name:
        how += f"; config.json declares {declared}, which transformers does not have"
    return cls, _config(config_cls, config, folder), how


def _builtin_model_class(transformers, name: str):
    try:
        cls = getattr(transformers, name)
    except Exception:  # lazy import of a model whose dependencies are missing, or no such name
        return None
    return cls if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel) else None


def _config(config_cls, config: dict, folder: Path):
    try:
        built = config_cls.from_dict(dict(config))
    except Exception as exc:  # config classes validate their values and raise anything
        raise CorruptError(f"config.json does not make a {config_cls.__name__}: {type(exc).__name__}: "
                           f"{first_line(exc)}", path=str(folder), format=FMT,
                           hint="re-save the model with save_pretrained") from exc
    for switch in _FETCHING_SWITCHES:  # the folder holds every weight: never let a constructor fetch more
        if getattr(built, switch, False):
            setattr(built, switch, False)
    return built
