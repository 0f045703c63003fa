"""Operational logging with structlog: a readable console on a terminal, JSON lines otherwise.

Under systemd stdout goes to journald, where JSON keeps every key searchable. Log lines are for
operators; the sync history (gateway/store/history.py) is the record of what happened to each file.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, WrappedLogger

from gateway.text import visible

_LIMIT = 4000
"""Characters of one logged value: an error message or a list of config problems stays whole."""


def _escape_text(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """File names come from senders, also inside error messages: never let their control characters
    reach a log line raw, whichever key carries them."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = visible(value, _LIMIT)
        elif isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
            event[key] = [visible(v, _LIMIT) if isinstance(v, str) else v for v in value]
    return event


_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
"""Exceptions as structured frames, without the frames' local variables (structlog's default shows
them; on a terminal the plain traceback, never rich's, which would show them too). A local is repr'd
whole before it is cut to length: a frame holding the service repr'd all of its state, every file in
flight included, for minutes on the event loop, which under a burst held up that process's files and,
through its ledger transactions, every other process's too (bench/burst.py with eight processes).
And a frame's locals may hold a file's records, which a log line must never carry."""


def configure_logging(*, json_output: bool | None = None, level: int = logging.INFO) -> None:
    """structlog for the gateway's own lines; the standard library's (watchdog, the history writer's
    repairs) go through the same processors, so journald gets one format whoever logs."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        _escape_text,
        _TRACEBACKS if json_output else structlog.dev.set_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),  # one write a line; print makes two
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
