"""CLI: `ai00-server [MODEL.st] [--config FILE] [--SECTION.FIELD VALUE ...]` (also `python -m backend`).

Every field of Config.toml is a flag (`--listen.port 8080`, `--model.max_batch 16`, lists as JSON:
`--listen.api_keys '["k1"]'`) and an environment variable (`AI00_LISTEN__PORT=8080`); a flag wins over the
environment, which wins over the file, which wins over the default. Shortcuts: --ip, --port, --drain-timeout,
--log-level, --log-format.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic_settings import CliSettingsSource

from backend.config import DEFAULT_CONFIG, Config, ConfigError, ConfigLayers, layered
from backend.resources import package_version

SHORTCUTS = {
    "listen.ip": "ip",
    "listen.port": "port",
    "listen.drain_timeout": "drain-timeout",
    "log.level": "log-level",
    "log.format": "log-format",
}


def parser() -> tuple[argparse.ArgumentParser, CliSettingsSource]:
    """The argument parser: our own arguments, and a flag per config field added by pydantic-settings."""
    p = argparse.ArgumentParser(prog="ai00-server", description="RWKV inference server (OpenAI REST/SSE + WebSocket)",
                                epilog="Every flag is also an environment variable: --listen.port is AI00_LISTEN__PORT")
    p.add_argument("model.path", nargs="?", metavar="MODEL", default=argparse.SUPPRESS,
                   help="the .st model file (model.path); none: the tiny embedded demo model")  # fmt: skip
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="TOML settings file (default: the shipped defaults)")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    cli = CliSettingsSource(ConfigLayers, root_parser=p, cli_implicit_flags=True, cli_shortcuts=SHORTCUTS)
    return p, cli


def load_config(argv: list[str] | None = None) -> Config:
    """Flags over AI00_* environment variables over the --config file over the defaults, validated once."""
    p, cli = parser()
    args = p.parse_args(argv)
    return layered(cli(parsed_args=args)(), args.config)


def main(argv: list[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except ConfigError as e:
        sys.exit(f"ai00-server: bad settings:\n{e}")
    from backend import logs

    logs.configure(config.log.level, config.log.format)
    logs.quiet_mesa()
    from backend.serve import serve  # the heavy imports (aiohttp, wgpu) only once the settings are good

    sys.exit(asyncio.run(serve(config)))


if __name__ == "__main__":
    main()
