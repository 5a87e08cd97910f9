"""`splitedge <command> ...`: dispatches to the edge server, the device daemon or the model tools.

Imports are lazy: `splitedge device ...` must start on a Raspberry Pi without torch installed.
"""

from __future__ import annotations

import sys

USAGE = """usage: splitedge <command> [options]

commands:
  serve     run the edge server (gRPC + HTTP)            splitedge serve --help
  device    run the device daemon (torch-free)           splitedge device run --config FILE
  demo      edge + device end to end on a generated clip splitedge demo [--short]
  dataset   generate the shapes benchmark / a video      splitedge dataset generate --help
  train     train a teacher or a student (YAML config)   splitedge train CONFIG
  eval      rate–accuracy report of bundles + baselines  splitedge eval --help
  export    export a split model to a bundle             splitedge export --help
"""

MODEL_COMMANDS = ("dataset", "train", "eval", "export")  # need the train extra (torch)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        from edge_server.app import main as serve_main

        return serve_main(rest)
    if command == "device":
        from device_client.daemon import main as device_main

        return device_main(rest)
    if command in MODEL_COMMANDS:
        from split_models.cli import main as model_main

        return model_main(args)
    if command == "demo":
        from splitedge.demo import main as demo_main

        return demo_main(rest)
    print(f"splitedge: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
