"""Subprocess entry for one benchmark configuration: prints one JSON object."""

from __future__ import annotations

import json
import sys


def main() -> None:
    args = json.loads(sys.argv[1])
    from mltool.bench.timing import measure
    from mltool.errors import MltoolError

    try:
        row = measure(args["model"], args["threads"], args["runs"], args["seconds"], args["warmup"],
                      args.get("delegate"), args.get("delegate_options"), args.get("input_shape"))
    except MltoolError as exc:
        print(f"Error: {exc.one_line()}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
