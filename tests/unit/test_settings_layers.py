"""Every setting from a flag, from the environment and from the file, in that precedence (backend/__main__.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from backend.__main__ import load_config
from backend.config import Config, ConfigError
from backend.resources import package_version


def samples(files: Path) -> dict[str, Any]:
    """A valid value unlike the default for every leaf setting, as `section.field` (or `listen.tls.cert`)."""
    f = str(files / "some.st")
    return {
        "model.path": f, "model.precision": "fp32", "model.quant": 3, "model.quant_type": "nf4",
        "model.max_batch": 4, "model.token_chunk_size": 64, "model.prefix_cache": 2, "model.adapter": "llvm",
        "model.states": [{"path": f, "name": "poet", "default": True}], "model.loras": [{"path": f, "alpha": 2.0}],
        "model.name": "poet-7b", "model.adapters": [0, "llvm"], "model.max_prefill_chunk": 512,
        "model.decode_gap_ms": 50.0,
        "models": [{"name": "a", "path": f}, {"name": "b", "path": f, "adapters": [0, 1]}],
        "strict_model_names": True, "gpu_budget_bytes": 1 << 30,
        "tokenizer.path": f,
        "listen.ip": "10.1.2.3", "listen.port": 8080, "listen.tls.cert": f, "listen.tls.key": f,
        "listen.api_keys": ["k1", "k2"], "listen.cors_origins": ["http://a.example"], "listen.admin_key": "adm",
        "listen.force_pass": True, "listen.metrics_key": "mk", "listen.drain_timeout": 5.5,
        "limits.max_body_bytes": 2048, "limits.max_message_bytes": 4096, "limits.max_prompt_tokens": 99,
        "limits.max_tokens": 77, "limits.max_n": 3, "limits.max_queue": 5,
        "sampler.max_tokens": 100, "sampler.temperature": 0.5, "sampler.top_p": 0.9, "sampler.top_k": 5,
        "sampler.min_p": 0.1, "sampler.presence_penalty": 0.5, "sampler.frequency_penalty": 0.25,
        "sampler.half_life": 100.0,
        "bnf.enable_bytes_cache": False, "bnf.start_nonterminal": "root",
        "chat.template": f, "chat.reasoning_format": "none",
        "cache.host_bytes": 1 << 20, "cache.checkpoint_every": 64, "cache.shared": True,
        "files.allowed_dirs": ["models", "more"],
        "log.level": "DEBUG", "log.format": "json",
    }  # fmt: skip


def leaf_settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation  # a section, or an optional one (listen.tls); tuples of entries are one setting
        inner = [] if get_origin(ann) is tuple else [a for a in get_args(ann) or (ann,) if isinstance(a, type)]
        section = next((a for a in inner if issubclass(a, BaseModel)), None)
        out += leaf_settings(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"]
    return out


def value_of(config: Config, key: str) -> Any:
    v = config.model_dump(mode="json")
    for part in key.split("."):
        v = v[part]
    return v


def expected(key: str, value: Any) -> Any:
    """The value as Config validates it (tuples, entries with their defaults filled in)."""
    data: dict[str, Any] = {}
    *sections, field = key.split(".")
    node = data
    for s in sections:
        node = node.setdefault(s, {})
    node[field] = value
    if key.startswith("listen.tls."):
        other = "key" if field == "cert" else "cert"
        node[other] = value
    return value_of(Config.from_dict(data), key)


def as_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | bool) else str(value)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "some.st").write_bytes(b"")
    (tmp_path / "empty.toml").write_text("")
    for name in [n for n in __import__("os").environ if n.startswith("AI00_")]:
        monkeypatch.delenv(name)
    return tmp_path


def flag_args(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}" if value else f"--no-{key}"]
    args = [f"--{key}", as_text(value)]
    if key.startswith("listen.tls."):  # a TLS section needs both files
        args += ["--listen.tls.key" if key.endswith("cert") else "--listen.tls.cert", as_text(value)]
    return args


def env_name(key: str) -> str:
    return "AI00_" + key.upper().replace(".", "__")


def test_every_setting_has_a_sample_here(tmp_path: Path):
    assert sorted(samples(tmp_path)) == sorted(leaf_settings(Config)), "a new setting needs a sample above"


@pytest.mark.parametrize("key", sorted(samples(Path("."))))
def test_every_setting_comes_from_a_flag(files: Path, key: str):
    value = samples(files)[key]
    config = load_config(["--config", str(files / "empty.toml"), *flag_args(key, value)])
    assert value_of(config, key) == expected(key, value)


@pytest.mark.parametrize("key", sorted(samples(Path("."))))
def test_every_setting_comes_from_the_environment(files: Path, key: str, monkeypatch: pytest.MonkeyPatch):
    value = samples(files)[key]
    monkeypatch.setenv(env_name(key), as_text(value).lower() if isinstance(value, bool) else as_text(value))
    if key.startswith("listen.tls."):
        monkeypatch.setenv(env_name("listen.tls.key" if key.endswith("cert") else "listen.tls.cert"), str(value))
    config = load_config(["--config", str(files / "empty.toml")])
    assert value_of(config, key) == expected(key, value)


def test_flag_beats_environment_beats_file_beats_default(files: Path, monkeypatch: pytest.MonkeyPatch):
    toml = files / "Config.toml"
    toml.write_text('[listen]\nport = 1111\napi_keys = ["file"]\n[model]\nmax_batch = 3\n')
    monkeypatch.setenv("AI00_LISTEN__PORT", "2222")
    monkeypatch.setenv("AI00_LISTEN__API_KEYS", '["env"]')
    both = load_config(["--config", str(toml), "--port", "3333", "--listen.api_keys", '["flag"]'])
    assert (both.listen.port, both.listen.api_keys, both.model.max_batch) == (3333, ("flag",), 3)
    env = load_config(["--config", str(toml)])
    assert (env.listen.port, env.listen.api_keys) == (2222, ("env",))
    monkeypatch.delenv("AI00_LISTEN__PORT")
    monkeypatch.delenv("AI00_LISTEN__API_KEYS")
    file = load_config(["--config", str(toml)])
    assert (file.listen.port, file.listen.api_keys) == (1111, ("file",))
    default = load_config(["--config", str(files / "empty.toml")])
    assert (default.listen.port, default.model.max_batch) == (65530, 8)


def test_positional_model_path_and_shortcut_flags(files: Path):
    model = str(files / "some.st")
    config = load_config([model, "--config", str(files / "empty.toml"), "--ip", "10.0.0.9", "--port", "81",
                          "--drain-timeout", "2", "--log-level", "WARNING", "--log-format", "json"])  # fmt: skip
    assert config.model.path == model
    assert (config.listen.ip, config.listen.port, config.listen.drain_timeout) == ("10.0.0.9", 81, 2.0)
    assert (config.log.level, config.log.format) == ("WARNING", "json")


def test_bad_environment_values_name_the_setting_and_hide_secrets(files: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AI00_LISTEN__PROT", "1")
    with pytest.raises(ConfigError, match=r"listen\.prot: unknown field"):
        load_config(["--config", str(files / "empty.toml")])
    monkeypatch.delenv("AI00_LISTEN__PROT")
    monkeypatch.setenv("AI00_LISTEN__API_KEYS", "[12345]")  # a number where a key (a string) belongs
    monkeypatch.setenv("AI00_MODEL__MAX_BATCH", "0")
    with pytest.raises(ConfigError) as e:
        load_config(["--config", str(files / "empty.toml")])
    assert "model.max_batch: must be 1..1024, got 0" in str(e.value) and "listen.api_keys.0" in str(e.value)
    assert "12345" not in str(e.value)


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        load_config(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ai00-server {package_version()}"
