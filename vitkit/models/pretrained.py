"""Pretrained weights the way timm users know them: ``model.pretrained = true`` (or ``"hf-hub:org/name"``).

vitkit's ViT configs that share a name with a timm model (``vit_small_patch16_224``, ``deit_*``, ...)
map to timm's default pretrained tag; ``timm/<name>`` uses timm's own. timm fetches the file through
``huggingface_hub`` into the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), so
``HF_HUB_OFFLINE=1`` is honoured and a cached file is never fetched twice. The weights are converted
to vitkit's layout (position embeddings resized for another ``img_size``, input channels adapted)
and the classifier head is reset for the dataset's classes. Offline with nothing cached: a one-line
``UserError`` naming the missing file and ``model.checkpoint_path`` as the way to give it locally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vitkit.errors import UserError

HUB_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm/"
PROBE_TIMEOUT_S = 2.0
_offline_reason: list[str] = []  # why this process went offline (empty: online, or HF_HUB_OFFLINE set by the user)


def ensure_hub_reachable_or_offline(timeout: float = PROBE_TIMEOUT_S) -> None:
    """One quick request to the hub (``HF_ENDPOINT``, through huggingface_hub's own HTTP client, so proxies
    count); when it cannot be reached, this process (and the processes it starts) goes offline, as with
    ``HF_HUB_OFFLINE=1``: cached weights load at once, missing ones fail at once instead of after minutes of
    retries. Any HTTP answer counts as reachable. Probes once per process."""
    import os

    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE or _offline_reason or getattr(ensure_hub_reachable_or_offline, "probed", False):
        return
    ensure_hub_reachable_or_offline.probed = True  # type: ignore[attr-defined]
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except (OSError, hub_http_error()) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        _offline_reason.append(f"{constants.ENDPOINT} is unreachable ({first}), so vitkit went offline")
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"


def wants_pretrained(value: Any) -> bool:
    """Whether a ``model.pretrained`` value asks for weights (``true`` or an ``hf-hub:`` id)."""
    if value is None or value is False:
        return False
    if value is True or (isinstance(value, str) and value.startswith(HUB_PREFIX)):
        return True
    raise UserError(f'model.pretrained: expected true, false or "hf-hub:org/name", got {value!r}')


def timm_source(name: str, pretrained: Any) -> str:
    """The timm model name (or ``hf-hub:`` id) whose pretrained weights model ``name`` loads."""
    import timm

    if isinstance(pretrained, str):
        return pretrained
    base = name.removeprefix(TIMM_PREFIX)
    cfg = timm.models.get_pretrained_cfg(base) if timm.is_model(base) else None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise UserError(
            f"model {name!r} has no pretrained weights known to timm; use a config that has (e.g. "
            'vit_small_patch16_224), model.pretrained = "hf-hub:org/name", or model.checkpoint_path'
        )
    return base


def pretrained_cfg(name: str, pretrained: Any) -> dict[str, Any] | None:
    """The pretrained weights' config (mean, std, crop_pct, interpolation, ...); ``None`` when not
    pretrained. timm's own table for timm names; for ``hf-hub:`` ids the repo's ``config.json`` (through
    the Hugging Face cache, ``HF_HUB_OFFLINE`` honoured), the file timm reads for those weights."""
    if not wants_pretrained(pretrained):
        return None
    if isinstance(pretrained, str):
        return _hub_cfg(pretrained)
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_source(name, pretrained))
    return cfg.to_dict() if cfg is not None else None


def _hub_cfg(source: str) -> dict[str, Any]:
    """The ``pretrained_cfg`` of an ``hf-hub:`` repo's ``config.json``, as timm parses it."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    from timm.models._hub import load_model_config_from_hf

    ensure_hub_reachable_or_offline()
    try:
        parsed = load_model_config_from_hf(source.removeprefix(HUB_PREFIX))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, OSError) as err:
        raise _missing_weights(source, err, "config.json") from None
    return dict(parsed[0] or {})


def hub_file(source: str, filename: str, what: str = "") -> Path:
    """One file of an ``hf-hub:org/name[@revision]`` repo, through the Hugging Face cache (downloaded once;
    the cached copy under ``HF_HUB_OFFLINE``); one that is neither cached nor downloadable is a ``UserError``.
    ``what``: the line's advice instead of ``model.checkpoint_path`` (loading a model, not pretraining)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = source.removeprefix(HUB_PREFIX).partition("@")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision or None))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, hub_http_error()) as err:
        error = _missing_weights(HUB_PREFIX + repo, err, filename)
        if what:
            error = UserError(str(error).split("; run once")[0] + f"; run once with network to cache it, or {what}")
        raise error from None


def hub_folder(source: str, what: str = "pass a local copy of the folder") -> Path:
    """The cached snapshot folder of an ``hf-hub:`` repo that ``vitkit export --format hf`` wrote (or timm's
    ``push_to_hf_hub``): its ``config.json`` and ``model.safetensors``."""
    hub_file(source, "config.json", what)
    return hub_file(source, "model.safetensors", what).parent


def is_vitkit_export(source: str) -> bool:
    """Whether an ``hf-hub:`` repo was written by ``vitkit export --format hf`` (its config.json says so)."""
    if not source.startswith(HUB_PREFIX):
        return False
    return "vitkit" in json.loads(hub_file(source, "config.json").read_text())


def _missing_weights(source: str, err: Exception, filename: str = "model.safetensors") -> UserError:
    """The one line for weights (or their config) that are neither cached nor downloadable."""
    import timm
    from huggingface_hub import constants

    repo = source.removeprefix(HUB_PREFIX)
    if not source.startswith(HUB_PREFIX):
        cfg = timm.models.get_pretrained_cfg(source)
        repo = (cfg.hf_hub_id or cfg.url or source) if cfg is not None else source
        filename = (cfg.hf_hub_filename or filename) if cfg is not None else filename
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if _offline_reason:
        why = _offline_reason[0]
    else:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the download failed ({first})"
    return UserError(
        f"pretrained weights {repo} ({filename}) are not in the Hugging Face cache {constants.HF_HUB_CACHE} and "
        f"{why}; run once with network to cache them, or set model.checkpoint_path to a local weights file"
    )


def hub_http_error() -> type[Exception]:
    """The base class of the errors huggingface_hub's HTTP library raises (httpx's since huggingface_hub 1.0:
    a refused connection, a timeout, a download cut off), which are not ``OSError``s."""
    from huggingface_hub import errors

    return getattr(errors, "HTTPError", OSError)


def create_timm_pretrained(source: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(source, pretrained=True, **kwargs)``; a file timm cannot get is a ``UserError``."""
    import timm
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    ensure_hub_reachable_or_offline()
    try:
        return timm.create_model(source, pretrained=True, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, hub_http_error()) as err:
        raise _missing_weights(source, err) from None
    except (RuntimeError, ValueError, OSError) as err:
        if "offline" in str(err).lower() or "connect" in str(err).lower() or "not found" in str(err).lower():
            raise _missing_weights(source, err) from None
        raise
