"""`mltool serve`: the model as an HTTP service on the device, with a live view in the browser.

    from mltool.serve import ServeConfig, serve
    serve(ServeConfig(model="model_int8.tflite", port=8000))

    http.py       the HTTP/1.1 server (asyncio, standard library only)
    app.py        routing, API key, CORS, metrics, health and model metadata
    protocols.py  Open Inference Protocol v2, the Flash /predict shape, TF Serving REST, uploads
    inputs.py     base64, images, multipart, tensors: malformed input -> 400 with a reason
    engine.py     releases, one Predictor per worker, the bounded queue, micro-batching, hot swap
    live.py       --source: continuous inference, result consumers, MJPEG, snapshot, SSE
    server.py     serve(): start, follow new releases (poll + SIGHUP), drain on SIGTERM
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {"ServeConfig": "mltool.serve.config", "serve": "mltool.serve.server"}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
