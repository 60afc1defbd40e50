# mltool serve in a container. Multi-arch: the base image and every wheel exist for linux/amd64
# and linux/arm64 (64-bit Raspberry Pi OS); 32-bit ARM has no ai-edge-litert wheel.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t mltool-serve .
#   docker run -p 8000:8000 -v ~/mltool/models:/models:ro -e MLTOOL_API_KEY=... mltool-serve /models/fire
#
# The model is mounted at /models: a .tflite file, or a deployed model's folder, whose
# `current` release the server follows (a deploy on the host hot-reloads the container).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/mltool
COPY pyproject.toml README.md ./
COPY mltool ./mltool
RUN pip install ".[serve]" \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mltool \
 && mkdir /models && chown mltool /models

USER mltool
VOLUME ["/models"]
EXPOSE 8000
# Health endpoints need no API key. Exit 0 only when a model is loaded and answering.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=3).status != 200)"]
ENTRYPOINT ["mltool", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["/models/model.tflite"]
