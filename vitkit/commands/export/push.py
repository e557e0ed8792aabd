"""``vitkit push RUN org/name``: upload a run's Hugging Face Hub folder (``vitkit export --format hf``).

The token is huggingface_hub's usual one (``HF_TOKEN``, or what ``hf auth login`` stored). Offline
(``HF_HUB_OFFLINE``), without a token, or when the Hub cannot be reached or refuses: one line, exit 2.
Read it back with ``vitkit.load("hf-hub:org/name")``, ``model.pretrained = "hf-hub:org/name"`` or timm's
``timm.create_model("hf-hub:org/name", pretrained=True)``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitkit import extras
from vitkit.errors import UserError

CARD_PLACEHOLDER = "ORG/NAME"  # the model card's repo id until it is pushed


@dataclass
class Pushed:
    folder: Path
    repo_id: str
    url: str
    exported: bool  # the folder was exported for this push (else an existing export was uploaded)


def hub_folder_of(target: Path) -> Path | None:
    """``target`` itself when it is an hf folder (config.json and model.safetensors, not a run)."""
    if target.is_dir() and (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    return None


def check_can_push(repo_id: str) -> str:
    """The token to push with; a one-line ``UserError`` for a bad repo id, offline mode or no token."""
    extras.require("hub", "huggingface_hub", what="vitkit push")
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"{repo_id!r} is not a Hugging Face repo id (expected org/name)") from None
    if constants.HF_HUB_OFFLINE:
        raise UserError("HF_HUB_OFFLINE is set: vitkit push needs the network (unset HF_HUB_OFFLINE to upload)")
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def upload(folder: Path, repo_id: str, token: str, private: bool, message: str) -> str:
    """Create the repo (if needed) and upload ``folder`` as one commit; the commit's URL."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    from vitkit.models.pretrained import hub_http_error

    api = HfApi(token=token, library_name="vitkit")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "hf"
        shutil.copytree(folder, staged)
        card = staged / "README.md"
        if card.is_file():  # the card's load snippets name the repo
            card.write_text(card.read_text().replace(CARD_PLACEHOLDER, repo_id))
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=repo.repo_id, folder_path=staged, commit_message=message)
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            if status in (401, 403):
                raise UserError(f"the Hugging Face Hub refused the token for {repo_id} ({first})") from None
            raise UserError(f"upload to {repo_id} failed ({first})") from None
        except (ConnectionError, OSError, hub_http_error()) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({first})") from None
    return str(getattr(commit, "commit_url", "") or f"{constants.ENDPOINT}/{repo_id}")


def push(
    target: str | Path, repo_id: str, private: bool = False, message: str | None = None, token: str | None = None
) -> Pushed:
    """Upload ``target`` (a run directory or checkpoint: its ``export/hf/`` folder, exported first when
    missing; or an hf folder) to the Hub repo ``repo_id``; ``token``: ``check_can_push``'s (else checked here)."""
    token = token or check_can_push(repo_id)
    target = Path(target)
    folder = hub_folder_of(target)
    exported = False
    if folder is None:
        from vitkit.commands.export.formats import export
        from vitkit.runs.finished import open_run

        folder = open_run(target).run_dir / "export" / "hf"
        if hub_folder_of(folder) is None:
            export(target, "hf", out=folder)
            exported = True
    url = upload(folder, repo_id, token, private, message or f"Add {repo_id} (vitkit export --format hf)")
    return Pushed(folder, repo_id, url, exported)


def run_push(
    target: str, repo_id: str, private: bool = False, message: str | None = None, token: str | None = None
) -> int:
    from vitkit.engine.console import console

    done = push(target, repo_id, private, message, token)
    how = "exported and uploaded" if done.exported else "uploaded"
    console.print(f"{how} {done.folder} to {done.repo_id}: {done.url}")
    console.print(f'load it with vitkit.load("hf-hub:{done.repo_id}") or timm.create_model("hf-hub:{done.repo_id}")')
    return 0
