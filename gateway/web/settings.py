"""Where the console keeps its state, and its session key (never logged, never in the config itself)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.config import GatewayConfig

SECRET_ENV = "FDEP_WEB_SECRET"  # noqa: S105 (the variable's name, not a secret)
_MIN_SECRET = 32


def web_dir(config: GatewayConfig) -> Path:
    """``web.dir``, by default ``web/`` beside the spool root (the bundled config: ``var/web``)."""
    return config.web.dir or config.spool_root.parent / "web"


def accounts_path(config: GatewayConfig) -> Path:
    return web_dir(config) / "accounts.sqlite"


def audit_path(config: GatewayConfig) -> Path:
    return web_dir(config) / "audit.jsonl"


def index_path(config: GatewayConfig) -> Path:
    return web_dir(config) / "history-index.sqlite"


class SecretError(Exception):
    """The session key is unusable (too short, unreadable)."""


def session_secret(config: GatewayConfig) -> str:
    """``$FDEP_WEB_SECRET``, else the key file (created owner-only with 32 random bytes when missing)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        if len(from_env) < _MIN_SECRET:
            raise SecretError(f"{SECRET_ENV} holds fewer than {_MIN_SECRET} characters")
        return from_env
    path = config.web.session_secret_file or web_dir(config) / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"cannot read the session key {path}: {exc.strerror}") from None
    if len(secret) < _MIN_SECRET:
        raise SecretError(f"the session key in {path} holds fewer than {_MIN_SECRET} characters")
    return secret
