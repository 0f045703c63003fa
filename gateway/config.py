"""The gateway's configuration: one typed, validated object, loaded from one YAML file.

A bad config never surfaces as a traceback: ``load_config`` raises ``ConfigError`` carrying one line per
problem, each naming the key path (``routes.core-prod.url: ...``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from codes.registry import STATION_PATTERN, TRANSFER_CODE_PATTERN, TransferCode
from codes.tables import CatalogueError, TableSpec, bundled_tables, merge_tables, parse_table

FEEDBACK_DIR = "_feedback"
"""The quarantine folder of feedback files that matched no mailbox; so not a transfer code."""


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one ``key.path: what is wrong`` per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationConfig(_Strict):
    environment: Literal["test", "production"]
    route: str
    windows: bool = False  # reporting windows apply (production daily tables)


class DirectoryRoute(_Strict):
    type: Literal["directory"]
    path: Path
    # copy: the core gets its own durable copy. link: a hard link of the spool file, no byte copied (the
    # core then shares the inode with archive/ and must not change files in place); copies when it cannot
    # link (another filesystem, a restricted table's file, a file it may not link)
    hand_off: Literal["copy", "link"] = "copy"
    feedback: Path | None = None  # where the core drops OK/BAD feedback files
    on_window: Literal["hold", "reject"] = "hold"


class HttpRoute(_Strict):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    timeout_seconds: float = Field(default=30, gt=0)
    task_retry_seconds: float = Field(default=60, gt=0)  # 409 TASK_NOT_IN_PREPARATION: retry every ...
    task_retry_total_seconds: float = Field(default=1800, gt=0)  # ... for this long, then reject
    max_backoff_seconds: float = Field(default=300, gt=0)  # 5xx/timeouts: backoff ceiling, retried forever
    feedback: Path | None = None
    on_window: Literal["hold", "reject"] = "hold"


Route = Annotated[DirectoryRoute | HttpRoute, Field(discriminator="type")]


class Limits(_Strict):
    max_file_bytes: int = Field(default=4 * 1024**3, gt=0)
    zip_max_members: int = Field(default=10_000, gt=0)
    zip_max_total_bytes: int = Field(default=4 * 1024**3, gt=0)
    zip_max_ratio: float = Field(default=200, gt=1)


class HistoryConfig(_Strict):
    dir: Path
    retention_days: int = Field(default=400, gt=0)


class RetentionConfig(_Strict):
    archive_days: int = Field(default=90, gt=0)
    quarantine_days: int = Field(default=180, gt=0)


class MetricsConfig(_Strict):
    listen: str = Field(pattern=r"^[^\s:]+:\d{1,5}$")


class WebConfig(_Strict):
    """The web console (``fdep-gateway web``): where it listens and keeps its accounts and audit log."""

    listen: str = Field(default="127.0.0.1:8480", pattern=r"^[^\s:]+:\d{1,5}$")
    dir: Path | None = None  # accounts, session key, audit log, history index; default <spool_root>/../web
    session_secret_file: Path | None = None  # default <dir>/session.key; FDEP_WEB_SECRET overrides
    tls_cert: Path | None = None  # both set: the console serves HTTPS itself
    tls_key: Path | None = None
    secure_cookies: bool = False  # true behind a TLS-terminating reverse proxy (implied by tls_cert)
    forwarded_allow_ips: str | None = None  # the proxy's address: trust its X-Forwarded-For/-Proto
    max_failed_logins: int = Field(default=5, ge=1)
    lockout_minutes: float = Field(default=15, gt=0)
    session_hours: float = Field(default=8, gt=0)
    logins_per_address: int = Field(default=20, ge=1)  # login attempts one client address may make ...
    logins_window_seconds: float = Field(default=300, gt=0)  # ... in this many seconds

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("web: tls_cert and tls_key go together")
        return self


class SqliteStore(_Strict):
    """The embedded default: one node, the ledger in ``<spool_root>/.gateway-ledger.sqlite``."""

    kind: Literal["sqlite"] = "sqlite"


class PostgresStore(_Strict):
    """Several nodes on one PostgreSQL: ledger, history and mailbox leases there (docs/scale-out.md)."""

    kind: Literal["postgresql"]
    dsn: str = Field(min_length=1)  # libpq keywords or URI, without the password
    password_file: Path | None = None  # read at start; or ...
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # ... this variable
    node_id: str = Field(
        default_factory=lambda: socket.gethostname(), pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
    )
    lease_seconds: float = Field(default=10, ge=2, le=300)  # a lease not renewed for this long is free
    renew_seconds: float = Field(default=2, gt=0)  # renew, heartbeat and rebalance every ...
    groups: int = Field(default=64, ge=1, le=4096)  # mailboxes are leased in this many groups

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if re.search(r"(^|\s)password\s*=", value) or re.match(r"^postgres(ql)?://[^/@]*:[^/@]*@", value):
            raise ValueError("holds a password: use password_file or password_env (a DSN ends up in logs)")
        return value

    @model_validator(mode="after")
    def _renew_well_within_lease(self) -> PostgresStore:
        if self.renew_seconds * 3 > self.lease_seconds:
            raise ValueError(
                f"renew_seconds ({self.renew_seconds:g}) must be at most a third of lease_seconds "
                f"({self.lease_seconds:g}): a node gets two more tries before it must stop"
            )
        return self

    def password(self) -> str | None:
        """The password, from its file or variable (never from the config itself)."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None


StoreConfig = Annotated[SqliteStore | PostgresStore, Field(discriminator="kind")]

MAX_PROCESSES = 16


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, a cpuset), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_processes(store: object) -> int:
    """``processes`` when the config leaves it out: one a CPU on SQLite (up to 16); one with PostgreSQL,
    where more throughput is more nodes (each node one process: its leases share out the mailboxes)."""
    if isinstance(store, PostgresStore):
        return 1
    return max(1, min(usable_cpus(), MAX_PROCESSES))


class ObligationsConfig(_Strict):
    """What is due, by when (``fdep-gateway due``, the reconciliation report, the obligation gauges)."""

    at_risk_hours: float = Field(default=24, gt=0)  # nothing accepted this close to a deadline: at risk
    reports_dir: Path | None = None  # daily reconciliation reports; None: ``reports`` beside history.dir
    gauges_seconds: float = Field(default=300, gt=0)  # how often the daemon refreshes the gauges


class GatewayConfig(_Strict):
    """Everything the daemon and ``check`` need; paths are absolute once loaded."""

    spool_root: Path
    timezone: str = "Asia/Shanghai"
    settle_seconds: float = Field(default=2, ge=0)
    rescan_seconds: float = Field(default=30, gt=0)
    pair_timeout_seconds: float = Field(default=600, gt=0)
    shutdown_timeout_seconds: float = Field(default=30, gt=0)
    workers: int = Field(default=0, ge=0)  # validation processes; 0 = one per core
    systems: tuple[str, ...] = ("CISP",)
    stations: dict[Annotated[str, Field(pattern=STATION_PATTERN)], StationConfig]
    routes: dict[str, Route]
    transfer_codes: dict[Annotated[str, Field(pattern=TRANSFER_CODE_PATTERN)], TransferCode]
    tables: dict[str, TableSpec] = Field(default_factory=dict)  # the whole catalogue once loaded
    limits: Limits = Limits()
    history: HistoryConfig
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig | None = None
    web: WebConfig = WebConfig()
    holidays: tuple[date, ...] = ()  # extra non-working days
    workdays: tuple[date, ...] = ()  # extra working days (make-up weekends)
    obligations: ObligationsConfig = ObligationsConfig()  # what is due, by when
    store: StoreConfig = SqliteStore()  # where the ledger, the history and (with PostgreSQL) leases live
    # gateway processes sharing out the mailboxes; after ``store``, whose kind decides the default
    processes: int = Field(
        default_factory=lambda data: default_processes(data.get("store")), ge=1, le=MAX_PROCESSES
    )
    detection: Literal["auto", "inotify", "scan"] = "auto"  # auto: scan alone on NFS, CephFS, ...

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("systems")
    @classmethod
    def _systems(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not re.fullmatch(r"[A-Z]{2,8}", s)]
        if bad or not value:
            raise ValueError(f"system prefixes are 2-8 capital letters (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        problems: list[str] = []
        for name, settings in self.stations.items():
            if settings.route not in self.routes:
                problems.append(f"stations.{name}.route: no route named {settings.route!r}")
        for code, entry in self.transfer_codes.items():
            where = f"transfer_codes.{code}"
            for station in entry.stations:
                if station not in self.stations:
                    problems.append(f"{where}.stations: unknown station {station!r}")
            if entry.route is not None and entry.route not in self.routes:
                problems.append(f"{where}.route: no route named {entry.route!r}")
            for table in entry.tables or ():
                if table not in self.tables:
                    problems.append(f"{where}.tables: unknown table {table!r}")
            for table in entry.owes or ():
                if table not in self.tables:
                    problems.append(f"{where}.owes: unknown table {table!r}")
        problems.extend(self._test_never_reaches_production())
        problems.extend(self._feedback_problems())
        if isinstance(self.store, PostgresStore) and self.processes != 1:
            problems.append(
                "processes: must be 1 with store kind postgresql (run one node per CPU: leases share the "
                "mailboxes among nodes)"
            )
        both = sorted(set(self.holidays) & set(self.workdays))
        if both:
            problems.append(f"holidays: {', '.join(map(str, both))} also listed in workdays")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _feedback_problems(self) -> list[str]:
        """A feedback directory is the core's way back: never a core directory, never in the spool."""
        problems = []
        if FEEDBACK_DIR in self.transfer_codes:
            problems.append(f"transfer_codes.{FEEDBACK_DIR}: reserved for quarantined feedback files")
        core_paths = {r.path for r in self.routes.values() if isinstance(r, DirectoryRoute)}
        for name, route in self.routes.items():
            if route.feedback is None:
                continue
            if route.feedback in core_paths:
                problems.append(f"routes.{name}.feedback: is a core directory; feedback needs its own")
            if route.feedback.is_relative_to(self.spool_root):
                problems.append(f"routes.{name}.feedback: must not be inside spool_root")
        return problems

    def _test_never_reaches_production(self) -> list[str]:
        """Spec 9: no route may carry both test and production stations' files."""
        used_by: dict[str, set[str]] = {}
        for settings in self.stations.values():
            used_by.setdefault(settings.route, set()).add(settings.environment)
        for entry in self.transfer_codes.values():
            if entry.route is None:
                continue
            for station in entry.stations:
                if station in self.stations:
                    used_by.setdefault(entry.route, set()).add(self.stations[station].environment)
        return [
            f"routes.{route}: used by both test and production stations; a test station's files "
            "must never reach a production route"
            for route, envs in sorted(used_by.items())
            if len(envs) > 1
        ]

    def route_for(self, station: str, code: TransferCode) -> str:
        return code.route or self.stations[station].route

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _resolve(base: Path, value: object) -> object:
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return value


def _absolutise(raw: dict[str, Any], base: Path) -> None:
    """Paths in the config are relative to the config file."""
    raw["spool_root"] = _resolve(base, raw.get("spool_root"))
    history = raw.get("history")
    if isinstance(history, dict):
        history["dir"] = _resolve(base, history.get("dir"))
    web = raw.get("web")
    if isinstance(web, dict):
        for key in ("dir", "session_secret_file", "tls_cert", "tls_key"):
            if key in web:
                web[key] = _resolve(base, web[key])
    store = raw.get("store")
    if isinstance(store, dict) and "password_file" in store:
        store["password_file"] = _resolve(base, store["password_file"])
    obligations = raw.get("obligations")
    if isinstance(obligations, dict) and "reports_dir" in obligations:
        obligations["reports_dir"] = _resolve(base, obligations["reports_dir"])
    routes = raw.get("routes")
    if isinstance(routes, dict):
        for route in routes.values():
            if isinstance(route, dict):
                for key in ("path", "feedback"):
                    if key in route:
                        route[key] = _resolve(base, route[key])


def _format(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        if len(parts) > 2 and parts[0] == "routes" and parts[2] in ("directory", "http"):
            del parts[2]  # the discriminator's tag, not a key the user wrote
        if len(parts) > 1 and parts[0] == "store" and parts[1] in ("sqlite", "postgresql"):
            del parts[1]
        loc = ".".join(parts)
        message = str(err["msg"]).removeprefix("Value error, ")
        for line in message.split("\n"):
            problems.append(line if line.startswith(tuple(_TOP_KEYS)) else f"{loc or '(top)'}: {line}")
    return problems


_TOP_KEYS = (
    "stations.",
    "routes.",
    "transfer_codes.",
    "tables.",
    "limits.",
    "history.",
    "metrics.",
    "retention.",
    "web:",
    "holidays:",
    "obligations.",
    "processes:",
)


def _load_yaml(path: Path, source: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [f"cannot read {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [f"{path} is not UTF-8"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"YAML syntax error{where}: {problem}"]) from None


def _load_tables(raw: Mapping[str, Any], source: str) -> dict[str, TableSpec]:
    try:
        base = bundled_tables()
    except CatalogueError as exc:
        raise ConfigError("bundled table catalogue", [str(exc)]) from None
    extra_raw = raw.get("tables") or {}
    if not isinstance(extra_raw, Mapping):
        raise ConfigError(source, ["tables: a mapping of table code to table definition"])
    extra: dict[str, TableSpec] = {}
    problems: list[str] = []
    for code, data in extra_raw.items():
        if not isinstance(data, Mapping):
            problems.append(f"tables.{code}: a table definition is a mapping")
            continue
        try:
            table = parse_table({"code": code, **data}, f"tables.{code}")
        except CatalogueError as exc:
            problems.append(str(exc))
            continue
        extra[table.code] = table
    if problems:
        raise ConfigError(source, problems)
    return merge_tables(base, extra)


def load_config(path: Path | str) -> GatewayConfig:
    """Read, resolve and validate a config file; raise ``ConfigError`` listing every problem."""
    path = Path(path).expanduser().resolve()
    source = str(path)
    raw = _load_yaml(path, source)
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top): the config is a YAML mapping of keys to values"])
    base = path.parent
    codes = raw.get("transfer_codes")
    if isinstance(codes, str):
        registry_path = Path(str(_resolve(base, codes)))
        codes = _load_yaml(registry_path, source)
        if not isinstance(codes, dict):
            raise ConfigError(source, [f"transfer_codes: {registry_path} must hold a mapping of codes"])
        raw["transfer_codes"] = codes
    _absolutise(raw, base)
    raw["tables"] = _load_tables(raw, source)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _format(exc)) from None


def default_check_config() -> GatewayConfig:
    """The rules ``check`` applies without a config: bundled catalogue, default systems and limits."""
    return GatewayConfig.model_validate(
        {
            "spool_root": "/nonexistent",
            "stations": {},
            "routes": {},
            "transfer_codes": {},
            "tables": bundled_tables(),
            "history": {"dir": "/nonexistent"},
        }
    )
