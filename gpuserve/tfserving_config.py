"""TensorFlow Serving's model config file (`tensorflow_model_server --model_config_file=models.config`): a
repository folder holding `models.config` serves the models it lists, as TFServing would.

The file is a ModelServerConfig in protobuf's text format: `model_config_list { config { name, base_path,
model_platform, model_version_policy, version_labels } ... }`. For each config:
- `base_path` (relative paths from the file's folder) holds version folders `<n>/saved_model.pb`;
- `model_version_policy`: `latest { num_versions: N }` (TFServing's default, N = 1), `all {}`, or
  `specific { versions: ... }`: each chosen version is one gpuserve version of the model;
- `version_labels { key: "stable" value: 1 }`: names a served version; TFServing's API takes the label where it
  takes a version (server/tfserving_api.py), and a label on a version not served is refused here, as TFServing
  refuses it, with the reason in the log.
Fields TFServing keeps for itself (logging_config, model_type) are read past.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List

from gpuserve.errors import InvalidSettings
from gpuserve.runtimes_tensorflow import is_savedmodel  # a path test: no tensorflow import
from gpuserve.settings import ModelSettings
from gpuserve.triton_config import _Parser, _tokens

logger = logging.getLogger("gpuserve")

MODEL_CONFIG_FILE = "models.config"  # the name TFServing's documentation and images use
# ModelServerConfig's repeated fields and its one map
_REPEATED = {"config", "versions"}
_MAPS = {"version_labels"}


def parse(text: str) -> List[Dict[str, Any]]:
    """The configs of a ModelServerConfig text."""
    found = _Parser(_tokens(text), repeated=_REPEATED, maps=_MAPS, strict=True).message(None)
    if "custom_model_config" in found:
        raise InvalidSettings("custom_model_config is TFServing's own extension point; list the models in "
                              "model_config_list")
    listed = found.get("model_config_list") or {}
    if not isinstance(listed, dict):
        raise InvalidSettings("model_config_list is a message")
    return [c for c in listed.get("config", []) if isinstance(c, dict)]


def read_model_config(path: Path) -> List[ModelSettings]:
    """Every version each config serves, as gpuserve settings (a config that cannot be served is one not-ready
    model saying why)."""
    try:
        configs = parse(path.read_text())
    except (OSError, UnicodeDecodeError, InvalidSettings) as exc:
        reason = str(exc).replace("config.pbtxt", path.name)
        return [ModelSettings(name=path.parent.name, folder=str(path.parent), _broken=f"{path}: {reason}")]
    # relative base paths from the file's own folder, also where the repository links to it (gpuserve/tfserving_cli.py)
    return settings_of(path.resolve().parent, configs, path.name)


def settings_of(root: Path, configs: List[Dict[str, Any]], source: str) -> List[ModelSettings]:
    """The settings of a config list (a models.config's, or one HandleReloadConfigRequest gave), relative
    base paths from `root`; `source` names where it came from in the reasons."""
    found: List[ModelSettings] = []
    for config in configs:
        name = str(config.get("name") or "")
        if not name:
            logger.error("%s: a config without a name is skipped", source)
            continue
        try:
            found += _versions(root, name, config)
        except (InvalidSettings, ValueError, TypeError, AttributeError, OSError) as exc:  # that model alone
            found.append(ModelSettings(name=name, folder=str(root), _broken=f"{source}: {exc}"))
    return found


def _versions(root: Path, name: str, config: Dict[str, Any]) -> List[ModelSettings]:
    platform = str(config.get("model_platform") or "tensorflow")
    if platform != "tensorflow":
        raise InvalidSettings(f"model '{name}': model_platform '{platform}' (TFServing serves 'tensorflow')")
    if not config.get("base_path"):
        raise InvalidSettings(f"model '{name}' has no base_path")
    base = (root / str(config["base_path"])).resolve()
    on_disk = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and is_savedmodel(p)) \
        if base.is_dir() else []
    chosen = _chosen(name, config.get("model_version_policy") or {}, on_disk)
    if not chosen:
        raise InvalidSettings(f"model '{name}': no version under {base} that its model_version_policy serves "
                              "(version folders <n>/saved_model.pb)")
    labels = {}
    for label, version in (config.get("version_labels") or {}).items():
        if not isinstance(version, int) or version not in chosen:
            # TFServing's refusal of such a config (its words), the other labels kept
            logger.error("Request to assign label to version %s of model %s, which is not currently available for "
                         "inference", version, name)
            continue
        labels[label] = version
    # a version the policy names alone is served; "latest" resolves to the highest one served, as TFServing's
    policy = {"specific": {"versions": chosen}}
    return [ModelSettings(name=name, folder=str(base), triton_version_policy=policy,
                          parameters={"uri": str(base / str(v)), "version": str(v),
                                      "extra": {"tfserving": {"version_labels": labels}}}) for v in chosen]


def _chosen(name: str, policy: Dict[str, Any], on_disk: List[int]) -> List[int]:
    if not isinstance(policy, dict) or len(policy) > 1:
        raise InvalidSettings(f"model '{name}': model_version_policy is one of latest, all, specific")
    if "all" in policy:
        return on_disk
    if "specific" in policy:
        wanted = [int(v) for v in (policy["specific"] or {}).get("versions", [])]
        missing = sorted(set(wanted) - set(on_disk))
        if missing:
            logger.error("model '%s': versions %s of its model_version_policy are not on disk", name, missing)
        return sorted(set(wanted) & set(on_disk))
    latest = (policy.get("latest") or {}).get("num_versions", 1) if "latest" in policy else 1
    return on_disk[-max(int(latest), 1):] if on_disk else []


def version_labels(model) -> Dict[str, int]:
    """The labels a model's config gives its versions (empty for models from elsewhere)."""
    parameters = getattr(getattr(model, "settings", None), "parameters", None)
    extra = getattr(parameters, "extra", None) or {}
    return dict((extra.get("tfserving") or {}).get("version_labels") or {})
