"""Server configuration: one dataclass, filled from defaults, a JSON/TOML file, SUPERSERVE_*
environment variables and CLI flags (each later source wins).

Everything a server process needs to start is here, so `superserve serve`, the Python API
(:class:`~superserve.serving.process.ServerProcess`) and tests build the same object.
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

from superserve.bundle_layout import EMBEDDED_BUNDLES, EMBEDDED_DIR, BundleLayout, resolve_bundle
from superserve.device import parse_device
from superserve.scheduling.policy import PolicyKind
from superserve.serving.logs import LOG_FORMATS
from superserve.serving.restart import RestartPolicy

LATE_MODES = ("shed", "serve")
BACKENDS = ("local", "ray")  # where workers run (superserve/serving/executor.py)
QUANTILES = ("p50", "p99")  # the latency-profile columns a policy can plan with


@dataclass
class ServeConfig:
    # --- what to serve ---------------------------------------------------------------------
    bundle: str = str(EMBEDDED_DIR)  # weights.safetensors + subnetnorm.safetensors (+ profile.json)
    profile: str | None = None  # latency profile; default: <bundle>/profile.json
    model_name: str = "supernet"  # the KServe v2 model name clients address
    # Several SuperNets in one server (superserve/serving/multi.py): two or more bundles
    # (directories or shipped names, NAME=DIR to choose the model name), each served under its
    # own model name on the same workers; None or one entry: serve ``bundle`` as model_name.
    bundles: list[str] | None = None
    subnets: list[str] | None = None  # serve only these SubNet ids of the profile (default: all)
    # UINT8 inputs are raw pixels; the server maps them to the model's input scale with
    # (x / 255 - pixel_mean) / pixel_std. Defaults: Fashion-MNIST, as the embedded SuperNet.
    pixel_mean: float = 0.2860
    pixel_std: float = 0.3530

    # --- scheduling ------------------------------------------------------------------------
    policy: str = "slackfit"  # slackfit | maxbatch | maxacc | clipper+ | infaas
    subnet: str | None = None  # the fixed SubNet of clipper+
    min_accuracy: float | None = None  # INFaaS's accuracy floor
    slo_ms: float | None = None  # default deadline of a request without slo_ms; None: profile rule
    max_slo_ms: float = 60_000.0  # larger slo_ms values are refused as absurd
    queue_capacity: int = 1024  # bounded EDF queue: beyond it requests get 429 at once
    late: str = "shed"  # "shed": answer "deadline cannot be met" at once; "serve": run it late
    quantile: str = "p99"  # the profile column the policy plans with (docs/scheduling.md)
    overhead_ms: float = 0.3  # per-batch dispatch + result cost the profile does not contain
    # Plan every request to finish this long before its deadline (capped at slo_ms / 4): the
    # time a caller sees outside the router's clock (parsing before the deadline is stamped,
    # answer encoding and the fan-out of a batch, loopback, the client). Measured here at
    # ~900 req/s: p50 4 ms, p99 10-15 ms (docs/serving.md). 0 plans to the deadline itself.
    response_margin_ms: float = 5.0
    policy_params: dict[str, Any] = field(default_factory=dict)  # e.g. {"num_buckets": 4}
    # Online latency calibration (superserve/scheduling/calibration.py): plan on this host's
    # measured speed and per-batch overhead, not only on the profile. False: measure and
    # report (metrics, metadata) but plan on the profile as shipped.
    calibrate: bool = True
    calibration_check_s: float = 2.0  # start-up check of the profile against this host (0: none)
    calibration_window_s: float = 3.0  # recent batches the live estimate uses
    calibration_refresh_s: float = 0.5  # how often the estimate is recomputed (off the request path)

    # --- workers ---------------------------------------------------------------------------
    # cpu, cuda (every visible GPU, worker i on GPU i mod count) or cuda:N (every worker on N);
    # see superserve/device.py. `superserve serve --device cuda` without --workers runs one
    # worker per GPU used.
    device: str = "cpu"
    workers: int = 1
    # local: worker processes on this machine; ray: one Ray actor per worker, spread over the
    # nodes of the Ray cluster at ray_address ("auto": the one `ray start` began on this
    # machine; HOST:PORT; "local": a private single-node instance). docs/ray.md.
    backend: str = "local"
    ray_address: str | None = "auto"
    threads_per_worker: int = 1
    warmup_runs: int = 2  # forward passes per (SubNet, batch size) at start-up
    hang_timeout_s: float = 2.0  # a batch running longer (and 10x its expected latency) kills the worker
    # Supervisor (superserve/serving/supervisor.py): a dead worker is restarted after
    # restart_backoff_s, doubling per further death of that slot within restart_window_s up
    # to restart_backoff_max_s; its restart_max_deaths-th death within the window is final.
    restart: bool = True
    restart_backoff_s: float = 0.1
    restart_backoff_max_s: float = 10.0
    restart_max_deaths: int = 5
    restart_window_s: float = 60.0
    # A slot given up (restart_max_deaths within the window) is tried again after this many
    # seconds with a fresh window; None: given up for good (liveness fails once no slot can
    # come back, so an orchestrator restarts the server).
    restart_cooldown_s: float | None = 60.0
    # A restarted worker warms up this much nicer (CPU for the serving ones), only where it can
    # return to its siblings' priority afterwards (root or CAP_SYS_NICE or RLIMIT_NICE);
    # elsewhere it warms at their priority rather than serve nicer for good.
    restart_warmup_nice: int = 10
    # A request that was running on a worker that died is re-run alone (never batched again);
    # the request_max_deaths-th worker death while running it ends it: HTTP 500 / gRPC INTERNAL
    # ("worker died twice running this request"), so one poison input cannot take down every
    # worker in turn.
    request_max_deaths: int = 2
    # Warm standby workers (loaded and warmed, not serving): a dead worker's slot is refilled
    # by one at once instead of after a spawn + torch import + load + warm-up (6-8 s here);
    # a new standby then warms in the background. Each costs one worker's memory.
    standby_workers: int = 0

    # --- network ---------------------------------------------------------------------------
    host: str = "127.0.0.1"  # loopback unless told otherwise
    http_port: int = 8000  # 0: any free port (see ready_file)
    grpc_port: int | None = 8001  # None: no gRPC server
    max_request_bytes: int = 1 << 20  # larger bodies get 413
    read_timeout_s: float = 10.0  # a request body not complete by then gets 408 (stalled clients)
    ready_file: str | None = None  # written (JSON: ports, pid) once every worker is warm
    drain_timeout_s: float = 5.0  # on SIGTERM, how long queued requests may still be served
    # Bearer token required on every endpoint but /v2/health/* and gRPC ServerLive/ServerReady
    # (None: no auth). Prefer env SUPERSERVE_AUTH_TOKEN to a flag: flags show in `ps`.
    auth_token: str | None = field(default=None, repr=False)
    events_file: str | None = None  # lifecycle events as JSON lines (worker died/restarted/ready)
    log_format: str = "text"  # stderr log lines: "text" (superserve: ...) or "json" (one object per line)
    # TLS for REST and gRPC: PEM certificate (chain) and private key paths; both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Testing only (benchmarks/faults.py --poison, tests): a worker whose batch holds an input
    # whose first value is exactly this number dies at once (SIGSEGV), as a poison input would.
    inject_crash_value: float | None = None
    # --- front door (docs/frontdoor.md) ------------------------------------------------------
    # N >= 1: N front-end processes serve REST on http_port (SO_REUSEPORT) and pass decoded
    # requests to this process (the scheduler) over Unix sockets; 0: one process does everything.
    frontends: int = 0
    # Testing only (benchmarks/frontdoor.py): workers answer every batch at once, no compute.
    instant_workers: bool = False
    # --- end front door ----------------------------------------------------------------------
    # Benchmark mode only (benchmarks/peers.py): worker processes answer zero logits without
    # running the model, so a run measures the serving path alone (HTTP, queue, policy, dispatch
    # to the worker process and back, answer). Unlike instant_workers, the workers still exist.
    noop: bool = False

    def validate(self) -> "ServeConfig":
        """Check every setting; raises ValueError saying which one and what is allowed."""
        if self.late not in LATE_MODES:
            raise ValueError(f"late must be one of {LATE_MODES}, not {self.late!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {LOG_FORMATS}, not {self.log_format!r}")
        dev = parse_device(self.device)  # DeviceError (a ValueError) naming it; availability: check_device
        _check_int("workers", self.workers, 1, 1024)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.backend == "ray" and dev.is_cuda:
            raise ValueError("backend ray runs CPU actors only for now (GPU actors need Ray GPU resources per actor, "
                             "not implemented); use --device cpu, or --backend local on a GPU machine")
        if self.backend == "ray" and self.standby_workers:
            raise ValueError("standby_workers is not supported with backend ray (a dead actor's slot is refilled "
                             "by a new actor); set it to 0")
        _check_int("standby_workers", self.standby_workers, 0, 8)
        _check_int("threads_per_worker", self.threads_per_worker, 1, 1024)
        _check_int("warmup_runs", self.warmup_runs, 0, 1000)
        _check_int("queue_capacity", self.queue_capacity, 1, 10_000_000)
        _check_int("request_max_deaths", self.request_max_deaths, 1, 100)
        _check_int("restart_warmup_nice", self.restart_warmup_nice, 0, 19)
        _check_int("http_port", self.http_port, 0, 65535)
        _check_int("frontends", self.frontends, 0, 64)  # front door
        if self.grpc_port is not None:
            _check_int("grpc_port", self.grpc_port, 0, 65535)
        if self.quantile not in QUANTILES:
            raise ValueError(f"quantile must be one of {QUANTILES}, not {self.quantile!r}")
        _check_range("max_slo_ms", self.max_slo_ms, 0.0, 86_400_000.0, low_open=True)
        _check_range("hang_timeout_s", self.hang_timeout_s, 0.0, 3600.0, low_open=True)
        _check_range("overhead_ms", self.overhead_ms, 0.0, 10_000.0)
        _check_range("response_margin_ms", self.response_margin_ms, 0.0, 10_000.0, high_open=True)
        _check_range("read_timeout_s", self.read_timeout_s, 0.0, 3600.0, low_open=True)
        _check_range("drain_timeout_s", self.drain_timeout_s, 0.0, 3600.0)
        if self.slo_ms is not None:
            _check_range("slo_ms", self.slo_ms, 0.0, self.max_slo_ms, low_open=True)
        if self.min_accuracy is not None:
            _check_range("min_accuracy", self.min_accuracy, 0.0, 1.0)
        if not isinstance(self.max_request_bytes, int) or self.max_request_bytes < 4096:
            raise ValueError("max_request_bytes must be an integer of at least 4096")
        _check_range("pixel_std", self.pixel_std, 0.0, math.inf, low_open=True, high_open=True)
        _check_range("pixel_mean", self.pixel_mean, -math.inf, math.inf, low_open=True, high_open=True)
        if self.auth_token is not None:
            check_token(self.auth_token)
        self.restart_policy()  # raises on an inconsistent back-off, limit or cool-down
        if not (0.0 <= self.calibration_check_s <= 60.0):
            raise ValueError("calibration_check_s must be in [0, 60]")
        if not (0.05 <= self.calibration_window_s <= 600.0 and 0.01 <= self.calibration_refresh_s <= 60.0):
            raise ValueError("calibration_window_s must be in [0.05, 600] and calibration_refresh_s in [0.01, 60]")
        if not isinstance(self.policy_params, dict) or not all(isinstance(k, str) for k in self.policy_params):
            raise ValueError("policy_params must be a table of named policy parameters, e.g. {\"num_buckets\": 4}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key (PEM files), or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path!r}")
        if self.inject_crash_value is not None:
            _check_range("inject_crash_value", self.inject_crash_value, -math.inf, math.inf,
                         low_open=True, high_open=True)
        if self.bundles is not None and (not isinstance(self.bundles, list)
                                         or not all(isinstance(b, str) and b for b in self.bundles)):
            raise ValueError("bundles must be a list of bundle directories (or NAME=DIR)")
        if self.bundles and len(self.bundles) > 1:
            model_configs(self)  # raises on duplicate names and settings of one bundle only
        kind = PolicyKind.parse(self.policy)  # raises on an unknown name, listing the known ones
        if kind.needs_subnet and not self.subnet:
            raise ValueError(f"policy {kind.value} needs a SubNet: --subnet ID (one of the profile's ids)")
        return self

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(enabled=self.restart, backoff_s=self.restart_backoff_s,
                             backoff_max_s=self.restart_backoff_max_s, max_deaths=self.restart_max_deaths,
                             window_s=self.restart_window_s, cooldown_s=self.restart_cooldown_s)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def loopback(self) -> bool:
        """The bind address only accepts connections from this machine."""
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    def calibration_config(self):
        from superserve.scheduling.calibration import CalibrationConfig

        return CalibrationConfig(window_s=self.calibration_window_s, refresh_s=self.calibration_refresh_s,
                                 check_s=self.calibration_check_s)

    @property
    def profile_path(self) -> Path:
        return Path(self.profile) if self.profile else BundleLayout(self.bundle).profile

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "ServeConfig":
        """Read a JSON (.json) or TOML (.toml) file whose keys are this class's fields.
        Relative paths in it are taken relative to the file. ``overrides`` (non-None) win."""
        return cls.from_sources(path, {}, **overrides)

    @classmethod
    def from_sources(cls, path: str | Path | None, environ: Mapping[str, str], **overrides: Any) -> "ServeConfig":
        """The configuration of ``superserve serve``: defaults, then the file at ``path`` (if
        any), then ``SUPERSERVE_<FIELD>`` variables of ``environ``, then ``overrides`` (the
        command line's flags; None: not given). Each later source wins, field by field."""
        data = _file_settings(Path(path)) if path is not None else {}
        data.update(env_settings(environ))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


# --- several SuperNets in one server (superserve/serving/multi.py) ----------------------------
def split_bundle(arg: str) -> tuple[str, str]:
    """``NAME=DIR`` or ``DIR`` -> (model name, bundle). Without a name: the shipped bundle's
    name as given (``vit``, ``embedded``), else the directory's name."""
    if "=" in arg:
        name, _, path = arg.partition("=")
        if not name or not path:
            raise ValueError(f"--bundle {arg!r}: expected NAME=DIR or DIR")
        return name, path
    path = Path(arg)
    if not path.exists() and arg in EMBEDDED_BUNDLES:
        return arg, arg
    return resolve_bundle(arg).resolve().name or arg, arg


def model_configs(config: ServeConfig) -> list[ServeConfig]:
    """One configuration per served model: ``config`` itself for one bundle (its model_name
    as today), else a copy per ``bundles`` entry with that bundle and its own model name.
    Raises ValueError for a duplicate name or a setting that names one bundle's SubNets."""
    if not config.bundles or len(config.bundles) < 2:
        return [config]
    if config.model_name != "supernet":
        raise ValueError(f"model_name {config.model_name!r} names one model; serving {len(config.bundles)} bundles, "
                         "each is named by its bundle: --bundle NAME=DIR")
    for key in ("profile", "subnets", "subnet"):
        if getattr(config, key):
            raise ValueError(f"{key} names one bundle's profile or SubNets; it cannot be set when serving "
                             f"{len(config.bundles)} bundles (each serves its own profile.json)")
    if config.backend != "local":
        raise ValueError("serving several bundles needs backend local (Ray actors hold one SuperNet each for now); "
                         "serve one --bundle on --backend ray")
    if config.frontends:
        raise ValueError("serving several bundles with front-end processes (--frontends) is not supported yet: "
                         "the front ends carry one model's codec; serve several bundles with --frontends 0")
    out: list[ServeConfig] = []
    seen: dict[str, str] = {}
    for arg in config.bundles:
        name, bundle = split_bundle(arg)
        if name in seen:
            raise ValueError(f"two bundles would be served as model {name!r} ({seen[name]!r} and {arg!r}); "
                             "name them: --bundle NAME=DIR")
        seen[name] = arg
        out.append(replace(config, bundle=bundle, model_name=name, bundles=None))
    return out


ENV_PREFIX = "SUPERSERVE_"


def _file_settings(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table/object of settings")
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    for key in ("bundle", "profile", "tls_cert", "tls_key"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            local = (path.parent / data[key]).resolve()
            if key == "bundle" and data[key] in EMBEDDED_BUNDLES and not local.exists():
                continue  # the name of a shipped bundle ("vit")
            data[key] = str(local)
    if isinstance(data.get("bundles"), list):  # NAME=DIR or DIR, each relative to the file
        data["bundles"] = [_bundle_from_file(path, b) if isinstance(b, str) else b for b in data["bundles"]]
    return data


def _bundle_from_file(path: Path, arg: str) -> str:
    name, sep, bundle = arg.partition("=") if "=" in arg else ("", "", arg)
    if Path(bundle).is_absolute() or (bundle in EMBEDDED_BUNDLES and not (path.parent / bundle).exists()):
        return arg
    return f"{name}{sep}{(path.parent / bundle).resolve()}"


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``SUPERSERVE_<FIELD>`` variables (``SUPERSERVE_WORKERS=2``,
    ``SUPERSERVE_GRPC_PORT=none``), parsed by the field's type: booleans as true/false/1/0/
    yes/no, lists comma-separated, tables as JSON, ``none`` or empty for an optional field's
    None. An unknown ``SUPERSERVE_`` name is an error, so a typo never leaves a default on."""
    types = get_type_hints(ServeConfig)
    out: dict[str, Any] = {}
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name not in types:
            raise ValueError(f"{var}: not a setting; SUPERSERVE_ variables name ServeConfig fields: "
                             f"{', '.join(ENV_PREFIX + n.upper() for n in sorted(types))}")
        try:
            out[name] = _parse_env(types[name], text)
        except ValueError as exc:
            raise ValueError(f"{var}={text!r}: {exc}") from None
    return out


def _parse_env(kind: Any, text: str) -> Any:
    args = get_args(kind)
    if type(None) in args:  # Optional[X]
        if text.strip().lower() in ("", "none", "null"):
            return None
        kind = next(a for a in args if a is not type(None))
    origin = get_origin(kind) or kind
    if origin is bool:
        word = text.strip().lower()
        if word not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("expected true or false")
        return word in ("true", "1", "yes")
    if origin is int:
        return int(text)
    if origin is float:
        return float(text)
    if origin is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if origin is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    return text


def check_token(token: str) -> str:
    """A bearer token must fit an HTTP header and gRPC metadata: visible ASCII, no spaces."""
    if not token or not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError("auth token must be a non-empty string of visible ASCII characters without spaces "
                         "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


def _check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    """A finite number in the interval (bounds open or closed as told); refuses NaN, bools, text."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        try:
            v = float(value)
        except OverflowError:
            ok = False
        else:
            ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low:g}, {high:g}{hi}, not {value!r}")
