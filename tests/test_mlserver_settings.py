"""MLServer's server settings: `settings.json` field names and `MLSERVER_*` variables under gpuserve's
names (`mlserver_overrides`), with unknown fields warned about rather than fatal."""

from __future__ import annotations

import json
import logging

import pytest

from gpuserve.errors import InvalidSettings
from gpuserve.mlserver.settings import Settings, mlserver_overrides
from gpuserve.settings import ServerSettings


def write_settings(folder, values):
    (folder / "settings.json").write_text(json.dumps(values))
    return folder


def test_mlserver_settings_file_maps_to_gpuserve_names(tmp_path):
    write_settings(tmp_path, {"http_port": 9000, "grpc_port": 9001, "metrics_port": 9002, "host": "127.0.0.1",
                              "parallel_workers": 3, "model_repository_root": "/models",
                              "load_models_at_startup": False, "debug": "true", "server_name": "mine",
                              "grpc_max_message_length": 1024, "metrics_endpoint": "/prom",
                              "use_structured_logging": True})
    assert mlserver_overrides(tmp_path, {}) == {
        "http_port": 9000, "grpc_port": 9001, "metrics_port": 9002, "host": "127.0.0.1", "parallel_workers": 3,
        "model_repository_root": "/models", "load_models_at_startup": False, "log_level": "DEBUG",
        "server_name": "mine", "grpc_max_message_bytes": 1024, "metrics_path": "/prom", "logging_format": "json"}


def test_every_mapped_name_is_a_server_setting_or_the_pending_parallel_workers(tmp_path):
    write_settings(tmp_path, {"debug": False, "metrics_endpoint": None, "http_port": 1, "grpc_max_message_length": 5,
                              "use_structured_logging": False, "parallel_workers": 0})
    mapped = mlserver_overrides(tmp_path, {})
    assert mapped["log_level"] == "INFO" and mapped["enable_metrics_server"] is False
    unknown = set(mapped) - set(ServerSettings.model_fields) - {"parallel_workers"}
    assert not unknown
    ServerSettings.load(None, **{k: v for k, v in mapped.items() if k in ServerSettings.model_fields})


def test_environment_variables_and_file_precedence(tmp_path):
    env = {"MLSERVER_HTTP_PORT": "7000", "MLSERVER_GRPC_PORT": "7001", "MLSERVER_DEBUG": "0",
           "MLSERVER_MODEL_IMPLEMENTATION": "x.Y", "MLSERVER_INFER_URL": "localhost", "HOME": "/root"}
    assert mlserver_overrides(None, env) == {"http_port": "7000", "grpc_port": "7001", "log_level": "INFO"}
    write_settings(tmp_path, {"http_port": 7100})
    # as in MLServer, settings.json wins over MLSERVER_*
    assert mlserver_overrides(tmp_path, env)["http_port"] == 7100


def test_unknown_fields_warn_but_do_not_fail(tmp_path, caplog):
    write_settings(tmp_path, {"kafka_enabled": True, "made_up": 1, "device": "cpu", "http_port": 8100})
    with caplog.at_level(logging.WARNING, logger="gpuserve"):
        mapped = mlserver_overrides(tmp_path, {"MLSERVER_TRACING_SERVER": "otel:4317"})
    # every MLServer setting is served now: tracing (gpuserve/otel_mlserver.py), Kafka (gpuserve/mlserver/kafka.py)
    assert mapped == {"http_port": 8100, "tracing_server": "otel:4317", "kafka_enabled": True}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown setting 'made_up'" in messages and "kafka_enabled" not in messages
    assert "'tracing_server'" not in messages and "'device'" not in messages  # a gpuserve name is no surprise


def test_bad_values_are_clear_errors(tmp_path):
    write_settings(tmp_path, {"debug": "maybe"})
    with pytest.raises(InvalidSettings, match="debug"):
        mlserver_overrides(tmp_path, {})
    (tmp_path / "settings.json").write_text("{oops")
    with pytest.raises(InvalidSettings, match="settings.json"):
        mlserver_overrides(tmp_path, {})


def test_settings_class_has_mlservers_names_and_env_prefix(monkeypatch):
    monkeypatch.setenv("MLSERVER_HTTP_PORT", "8123")
    settings = Settings(parallel_workers=0)
    assert settings.http_port == 8123 and settings.parallel_workers == 0 and settings.server_name == "mlserver"


def test_model_settings_default_max_batch_size_is_zero_as_mlservers():
    from gpuserve.mlserver.settings import ModelSettings as MLServerModelSettings, as_mlserver_settings
    from gpuserve.settings import ModelSettings as Native

    assert MLServerModelSettings().max_batch_size == 0  # a runtime may test `max_batch_size > 1`
    assert as_mlserver_settings(Native(name="m")).max_batch_size == 0
    assert as_mlserver_settings(Native(name="m", max_batch_size=8)).max_batch_size == 8
    assert Native(name="m").max_batch_size is None  # gpuserve's own: "choose for me" (engine models)


def test_dot_env_in_the_working_directory_is_read_as_mlserver_reads_it(tmp_path, monkeypatch):
    # MLServer's settings are pydantic settings with env_file=".env": its MLSERVER_* lines count, the
    # environment wins over them.
    from gpuserve.mlserver.settings import ModelSettings as MLServerModelSettings
    from gpuserve.settings import ModelSettings as Native

    (tmp_path / ".env").write_text("MLSERVER_HTTP_PORT=8200\nMLSERVER_GRPC_PORT=8201\nOTHER=1\n"
                                   "MLSERVER_MODEL_IMPLEMENTATION=models.FromDotEnv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSERVER_GRPC_PORT", "8301")
    for name in ("MLSERVER_HTTP_PORT", "MLSERVER_MODEL_IMPLEMENTATION", "GPUSERVE_HTTP_PORT", "GPUSERVE_GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = ServerSettings.load(None)
    assert (settings.http_port, settings.grpc_port) == (8200, 8301)
    assert Settings().http_port == 8200
    assert MLServerModelSettings(name="m").implementation_ == "models.FromDotEnv"
    assert Native.from_env(tmp_path).implementation == "models.FromDotEnv"
