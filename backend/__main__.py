"""CLI: `ai00-server [--config assets/configs/Config.toml] [--ip IP] [--port N]` (also `python -m backend`)."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from backend.config import DEFAULT_CONFIG, Config, ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ai00-server", description="RWKV inference server (OpenAI REST/SSE + WebSocket)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="Config.toml (default: %(default)s)")
    p.add_argument("--ip", help="listen address, overrides listen.ip")
    p.add_argument("--port", type=int, help="listen port, overrides listen.port")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    """The config file with the command line's --ip/--port laid over it (validated like the file)."""
    config = Config.load(args.config)
    listen = config.listen.model_dump()
    if args.ip is not None:
        listen["ip"] = args.ip
    if args.port is not None:
        listen["port"] = args.port
    return Config.from_dict({**config.model_dump(), "listen": listen})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args)
    except ConfigError as e:
        sys.exit(f"ai00-server: bad config {args.config}:\n{e}")
    from backend.app import create_app, ssl_context

    app = create_app(config)
    scheme = "https" if config.listen.tls else "http"
    log = logging.getLogger("ai00")
    log.info("starting on %s://%s:%d (after the model loads)", scheme, config.listen.ip, config.listen.port)
    web.run_app(app, host=config.listen.ip, port=config.listen.port, ssl_context=ssl_context(config),
                handler_cancellation=True, print=None, shutdown_timeout=10.0)


if __name__ == "__main__":
    main()
