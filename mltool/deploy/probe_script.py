"""Runs ON THE DEVICE before a release becomes current: load the model with the device's own
runtime, allocate, run one inference. Stdlib + the runtime only (mltool need not be installed).

Usage: python -c SOURCE MODEL.tflite -> one JSON line; exit 1 with the runtime's error on failure.
"""

import json
import platform
import sys
import time


def main():
    path = sys.argv[1]
    errors = []
    Interpreter = None
    name = version = None
    for mod in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow"):
        try:
            m = __import__(mod, fromlist=["Interpreter"])
            Interpreter = m.Interpreter if mod != "tensorflow" else m.lite.Interpreter
            name = mod.split(".")[0]
            top = sys.modules[name]
            version = getattr(top, "__version__", "?")
            break
        except Exception as exc:  # ImportError, or numpy ABI errors in old runtimes
            errors.append("%s: %s" % (mod, exc))
    if Interpreter is None:
        sys.stderr.write("no TFLite runtime on the device (%s); install one with `mltool deploy --setup`\n" % "; ".join(errors))
        sys.exit(2)
    import numpy as np

    with open(path, "rb") as fh:
        content = fh.read()
    t0 = time.perf_counter()
    try:
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        load_ms = (time.perf_counter() - t0) * 1000
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        t1 = time.perf_counter()
        it.invoke()
        invoke_ms = (time.perf_counter() - t1) * 1000
    except Exception as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])
        sys.stderr.write("%s could not run the model: %s\n" % (name, " ".join(m.strip() for m in msg)[:400]))
        sys.exit(1)
    print(json.dumps({"runtime": name, "version": version, "load_ms": round(load_ms, 2), "invoke_ms": round(invoke_ms, 3),
                      "machine": platform.machine(), "python": platform.python_version(),
                      "inputs": [[int(s) for s in d["shape"]] for d in it.get_input_details()]}))


main()
