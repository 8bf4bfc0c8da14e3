"""Running the server as a service: configuration from a file, SUPERSERVE_* variables and flags
(flags > environment > file > defaults), and JSON log lines. No model is loaded here."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from superserve.serving.config import ServeConfig, env_settings
from superserve.serving.events import EventLog
from superserve.serving.logs import configure


def test_each_source_wins_over_the_one_before_field_by_field(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('workers = 2\nslo_ms = 30.0\nmodel_name = "from-file"\nbundle = "my_bundle"\n')
    env = {"SUPERSERVE_WORKERS": "3", "SUPERSERVE_MODEL_NAME": "from-env", "HOME": "/ignored"}
    cfg = ServeConfig.from_sources(path, env, model_name="from-flag", policy=None)
    assert cfg.workers == 3  # env over file
    assert cfg.slo_ms == 30.0  # file over default
    assert cfg.model_name == "from-flag"  # flag over env
    assert cfg.policy == "slackfit" and cfg.queue_capacity == 1024  # defaults where nobody spoke
    assert cfg.bundle == str((tmp_path / "my_bundle").resolve())  # a file's relative path: from the file
    assert ServeConfig.from_sources(None, {}, workers=None) == ServeConfig()


def test_environment_values_are_parsed_by_the_fields_type():
    got = env_settings({"SUPERSERVE_RESTART": "false", "SUPERSERVE_GRPC_PORT": "none", "SUPERSERVE_SLO_MS": "25",
                        "SUPERSERVE_SUBNETS": "a, b", "SUPERSERVE_POLICY_PARAMS": '{"num_buckets": 4}',
                        "SUPERSERVE_RESTART_COOLDOWN_S": "", "SUPERSERVE_HOST": "0.0.0.0",
                        "SUPERSERVE_CALIBRATE": "1", "OTHER": "x"})
    assert got == {"restart": False, "grpc_port": None, "slo_ms": 25.0, "subnets": ["a", "b"],
                   "policy_params": {"num_buckets": 4}, "restart_cooldown_s": None, "host": "0.0.0.0",
                   "calibrate": True}
    ServeConfig(**got).validate()


@pytest.mark.parametrize("env,message", [
    ({"SUPERSERVE_WORKRES": "2"}, "SUPERSERVE_WORKRES: not a setting"),
    ({"SUPERSERVE_WORKERS": "two"}, "SUPERSERVE_WORKERS='two'"),
    ({"SUPERSERVE_RESTART": "maybe"}, "expected true or false"),
    ({"SUPERSERVE_POLICY_PARAMS": "[1]"}, "expected a JSON object"),
])
def test_a_bad_variable_is_an_error_naming_it(env, message):
    with pytest.raises(ValueError, match=message):
        env_settings(env)


def serve_cli(tmp_path: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    """`superserve serve` with a config file of workers = 0 (invalid), which stops it while
    validating: the message says which setting won."""
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"workers": 0}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERSERVE_")}
    return subprocess.run([sys.executable, "-m", "superserve.cli", "serve", "--config", str(cfg), *flags],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_the_command_line_applies_the_same_order(tmp_path):
    out = serve_cli(tmp_path, {})
    assert out.returncode == 2 and "workers must be" in out.stderr and "not 0" in out.stderr
    out = serve_cli(tmp_path, {"SUPERSERVE_WORKERS": "1", "SUPERSERVE_LATE": "sometimes"})
    assert out.returncode == 2 and "late must be" in out.stderr  # env fixed workers, and broke late
    out = serve_cli(tmp_path, {"SUPERSERVE_WORKERS": "1", "SUPERSERVE_LATE": "sometimes"}, "--late", "shed",
                    "--log-format", "xml")
    assert out.returncode == 2 and "log_format must be" in out.stderr  # the flag fixed late


def test_json_log_lines(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure("json", stream)
    try:
        logging.getLogger("superserve").info("plain message")
        EventLog(tmp_path / "events.jsonl").emit("worker_died", "worker 1 died", worker=1, exitcode=-9)
        logging.getLogger("asyncio").error("from another library")
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, event, other = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "plain message" and first["level"] == "info" and first["logger"] == "superserve"
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert event["level"] == "warning" and event["event"] == "worker_died" and event["worker"] == 1
    assert event["exitcode"] == -9 and event["msg"] == "worker 1 died"
    assert other["logger"] == "asyncio" and other["level"] == "error"


def test_a_failed_start_logs_json_when_asked(tmp_path):
    out = subprocess.run([sys.executable, "-m", "superserve.cli", "serve", "--bundle", str(tmp_path / "missing"),
                          "--log-format", "json"], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SUPERSERVE_")})
    assert out.returncode == 2
    records = [json.loads(line) for line in out.stderr.splitlines()]
    assert records[-1]["level"] == "error" and "missing" in records[-1]["msg"]


def test_the_deploy_files_name_only_real_settings():
    """Every SUPERSERVE_ variable in deploy/ and the docs is a setting the server reads."""
    root = Path(__file__).resolve().parent.parent
    texts = [p.read_text() for p in [*(root / "deploy").iterdir(), root / "docs" / "serving.md", root / "README.md"]]
    names = {m for text in texts for m in re.findall(r"\bSUPERSERVE_[A-Z_]*[A-Z]\b", text)}
    assert {"SUPERSERVE_AUTH_TOKEN", "SUPERSERVE_HOST", "SUPERSERVE_LOG_FORMAT"} <= names
    settings = {f.name for f in fields(ServeConfig)}
    assert {n for n in names if n.removeprefix("SUPERSERVE_").lower() not in settings} == set()
