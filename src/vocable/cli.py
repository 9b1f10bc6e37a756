"""The ``vocable`` command: serve, check, plugins, schema, talk, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from vocable.config.loader import ConfigError, load_config, load_yaml
from vocable.config.loader import default_config_path  # noqa: F401 - its old home, still imported from here


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from vocable.logging import configure_logging

    config = load_config(args.config)
    server = config.server
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    workers = server.workers if args.workers is None else args.workers
    if workers < 1:
        print(f"vocable serve: --workers must be at least 1, not {workers}", file=sys.stderr)
        return 2
    configure_logging(server.log_level, server.log_format)
    from vocable.engine.engine import Engine

    # validates config and plugins here, before any worker starts; SIGTERM drains the live sessions first
    engine = Engine(config, freeze_gc=True, drain_on_sigterm=True)
    if args.config is None:
        print("vocable: no -c given, serving the built-in offline default (local models)", file=sys.stderr)
    print(f"vocable: loading providers; dashboard at http://{host}:{port}/", file=sys.stderr)
    if workers > 1:
        from vocable.serving import serve_workers

        print(f"vocable: {workers} worker processes (each loads its own models)", file=sys.stderr)
        serve_workers(args.config, host=host, port=port, workers=workers, log_level=server.log_level)
        return 0
    from vocable.serving import serve_options

    uvicorn.run(engine.asgi_app(), host=host, port=port, log_level=server.log_level, **serve_options(server))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from vocable.engine.engine import Engine

    try:
        engine = Engine(load_yaml(args.file))
    except ConfigError as exc:
        print(exc.render() if exc.source else ConfigError(exc.errors, args.file).render(), file=sys.stderr)
        return 1
    chains = {kind: " -> ".join(c.name for c in chain) for kind, chain in engine.resolved.chains.items()}
    print(f"{args.file}: ok")
    for kind, chain in chains.items():
        print(f"  {kind}: {chain}")
    print(f"  transports: {', '.join(t.name for t in engine.transports) or 'none'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from vocable.plugins.manager import KINDS, PluginHost

    host = PluginHost()
    if args.json:
        data = {
            "plugins": host.plugin_names(),
            "providers": {kind: {n: r.plugin for n, r in sorted(host.providers[kind].items())} for kind in KINDS},
            "transports": {n: r.plugin for n, r in sorted(host.transports.items())},
            "failures": [{"plugin": f.plugin, "error": f.error} for f in host.failures],
        }
        print(json.dumps(data, indent=2))
        return 0
    print("plugins: " + ", ".join(host.plugin_names()))
    for kind in KINDS:
        print(f"{kind}:")
        for name, reg in sorted(host.providers[kind].items()):
            missing = [r.module for r in getattr(reg.cls, "requires", ()) if r.missing()]
            note = f"  (not installed: {', '.join(missing)})" if missing else ""
            print(f"  {name:<14} from {reg.plugin}{note}")
    print("transport:")
    for name, reg in sorted(host.transports.items()):
        print(f"  {name:<14} from {reg.plugin}")
    for failure in host.failures:
        print(f"failed to load plugin {failure.plugin}: {failure.error}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from vocable.config.schema import config_schema
    from vocable.plugins.manager import PluginHost

    print(json.dumps(config_schema(PluginHost()), indent=2))
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    from vocable.talk import run_talk, talk_engine

    try:
        engine = talk_engine(load_config(args.config), turns=args.turns)
        result = asyncio.run(run_talk(engine, args.input, args.output))
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"vocable talk: {exc}", file=sys.stderr)
        return 1
    for n, turn in enumerate(result.turns, 1):
        if len(result.turns) > 1:
            print(f"-- turn {n} of {len(result.turns)}")
        print(f"you said:   {turn.transcript}")
        print(f"agent said: {turn.reply}")
        print("latency:    " + ", ".join(f"{k}={v:.0f} ms" for k, v in turn.latency.items() if v is not None))
    if args.output:
        print(f"reply audio: {args.output} ({result.audio_seconds:.2f} s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vocable.engine.cluster import cluster_status, format_status
    from vocable.engine.ledger import StateUnavailable

    config = load_config(args.config)
    if not config.state.url:
        print("vocable status: no shared state in this config (state.url): nothing to list", file=sys.stderr)
        return 2
    try:
        nodes = asyncio.run(cluster_status(config.state))
    except StateUnavailable as exc:
        print(f"vocable status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(nodes, indent=2) if args.json else format_status(nodes))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from vocable.recording.format import read
    from vocable.recording.replay import replay, report

    try:
        recording = read(args.file)
        config = load_config(args.config).model_dump() if args.config or args.providers == "live" else None
        comparison = replay(recording, config, args.providers)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"vocable replay: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report(comparison, args.providers)))
    return 1 if comparison.differs else 0


def cmd_test(args: argparse.Namespace) -> int:
    import time

    import yaml

    from vocable.scenarios.model import load
    from vocable.scenarios.report import junit, progress, summary
    from vocable.scenarios.runner import run_file

    try:
        scenarios = load(args.file)
        config = yaml.safe_load(open(args.config, encoding="utf-8")) if args.config else None
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as exc:
        print(f"vocable test: {exc}", file=sys.stderr)
        return 2
    source = os.path.basename(args.file)
    started = time.monotonic()
    print(f"vocable test: {len(scenarios.scenarios)} scenarios from {args.file}")
    outcomes, notes = asyncio.run(run_file(scenarios, config, select=args.select,
                                           on_outcome=lambda o: print(progress(source, o), flush=True)))
    seconds = time.monotonic() - started
    print("\n".join(summary(outcomes, seconds, notes)))
    if args.junit:
        with open(args.junit, "w", encoding="utf-8") as out:
            out.write(junit(outcomes, source, seconds))
    return 0 if outcomes and all(o.passed for o in outcomes) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vocable", description="Real-time voice agents: STT -> LLM -> TTS.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (no -c: the built-in offline default)")
    serve.add_argument("-c", "--config")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="server processes, one core each (default: server.workers, 1)")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)
    plugins = sub.add_parser("plugins", help="list installed plugins and their providers")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)
    schema = sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=cmd_schema)
    talk = sub.add_parser("talk", help="the whole WAV file as one user turn, answered with no network")
    talk.add_argument("input")
    talk.add_argument("-c", "--config")
    talk.add_argument("-o", "--output", help="write the reply audio here (every reply, in order, with --turns)")
    talk.add_argument("--turns", action="store_true",
                      help="let pauses in the file end turns, as live; each turn is answered in full")
    talk.set_defaults(func=cmd_talk)
    replay = sub.add_parser("replay", help="run a recording (storage.record) again; exit 1 if anything differs")
    replay.add_argument("file")
    replay.add_argument("-c", "--config", help="the config to replay with (default: the recorded one)")
    replay.add_argument("--providers", choices=("recorded", "live"), default="recorded",
                        help="recorded: the providers answer from the recording, on a virtual clock (default); "
                             "live: the config's providers, in real time")
    replay.set_defaults(func=cmd_replay)
    test = sub.add_parser("test", help="run scenario tests (docs/testing.md); exit 1 if one fails")
    test.add_argument("file")
    test.add_argument("-c", "--config", help="the engine's config (default: the file's, else the offline default)")
    test.add_argument("--junit", metavar="OUT.xml", help="also write the results as JUnit XML")
    test.add_argument("-k", dest="select", metavar="NAME", help="only the scenarios whose name contains NAME")
    test.set_defaults(func=cmd_test)
    status = sub.add_parser("status", help="the cluster's nodes, their sessions and readiness (from state.url)")
    status.add_argument("-c", "--config")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        from vocable.logging import configure_logging

        configure_logging("error")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
