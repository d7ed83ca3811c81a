import re
from pathlib import Path

import pytest

from backend.__main__ import load_config
from backend.config import DEFAULT_CONFIG, Config, ConfigError


def test_shipped_config_loads_with_documented_defaults():
    config = Config.load(DEFAULT_CONFIG)
    assert config == Config()
    assert (config.listen.ip, config.listen.port) == ("127.0.0.1", 65530)  # loopback unless told otherwise
    assert config.model.path == ""  # -> the demo model


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {"max_batch": 0}}, "model.max_batch: must be 1..1024, got 0"),
        ({"listen": {"api_keys": ["k", ""]}}, "listen.api_keys: key 1 is empty"),
        ({"model": {"token_chunk_size": 100000}}, "model.token_chunk_size: must be 1..8192, got 100000"),
        ({"model": {"max_prefill_chunk": "lots"}}, "model.max_prefill_chunk: must be \"auto\" or 1..8192, got 'lots'"),
        ({"model": {"max_prefill_chunk": 9000}}, "model.max_prefill_chunk: must be \"auto\" or 1..8192, got 9000"),
        ({"model": {"precision": "int3"}}, "model.precision: Input should be 'fp16' or 'fp32', got 'int3'"),
        ({"model": {"path": "missing.st"}}, "model.path: file 'missing.st' not found"),
        ({"model": {"batch": 4}}, "model.batch: unknown field"),
        ({"listen": {"port": 70000}}, "listen.port: must be 0..65535, got 70000"),
        ({"listen": {"tls": {"cert": "nope.pem", "key": "nope.key"}}}, "listen.tls.cert: file 'nope.pem' not found"),
        ({"tokenizer": {"path": "nope.txt"}}, "tokenizer.path: file 'nope.txt' not found"),
        ({"limits": {"max_n": 0}}, "limits.max_n: must be 1..64, got 0"),
        ({"sampler": {"temperature": 9.0}}, "sampler.temperature: must be 0.0..5.0, got 9.0"),
        ({"bnf": {"start_nonterminal": ""}}, "bnf.start_nonterminal"),
        ({"serve": {}}, "serve: unknown field"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "models: the name 'a' is given twice"),
        ({"models": [{"name": "a b"}]}, "models.0.name: 'a b' must be 1-64 letters"),
        ({"models": [{"max_batch": 0}]}, "models.0.max_batch: must be 1..1024, got 0"),
        ({"models": [{"name": "a"}], "model": {"max_batch": 4}}, "model: [model] is set beside [[models]]"),
        ({"gpu_budget_bytes": -1}, "gpu_budget_bytes: must be 0.."),
    ],
)
def test_bad_field_is_named_in_the_error(data, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    assert message in str(e.value)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"model": {"max_batch": 0}, "listen": {"port": -1}})
    assert "model.max_batch" in str(e.value) and "listen.port" in str(e.value)


def test_bad_toml_names_the_file(tmp_path: Path):
    bad = tmp_path / "Config.toml"
    bad.write_text("[model\nmax_batch = 1\n")
    with pytest.raises(ConfigError, match=r"Config\.toml"):
        Config.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.toml")


def test_command_line_overrides_listen_and_is_validated(tmp_path: Path):
    config = load_config(["--config", str(DEFAULT_CONFIG), "--ip", "127.0.0.1", "--port", "8080"])
    assert (config.listen.ip, config.listen.port) == ("127.0.0.1", 8080)
    with pytest.raises(ConfigError, match=re.escape("listen.port: must be 0..65535, got 99999")):
        load_config(["--config", str(DEFAULT_CONFIG), "--port", "99999"])
