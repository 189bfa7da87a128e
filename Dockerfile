# gridvlm's app as a container, CPU-only by default (torch from PyTorch's CPU index: no CUDA libraries).
#   docker build -t gridvlm . && docker run -p 7860:7860 gridvlm
# GPU image: PyPI's torch wheel is the CUDA build; run it with the NVIDIA container toolkit:
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t gridvlm:gpu .
#   docker run --gpus all -p 7860:7860 gridvlm:gpu
FROM python:3.11-slim

# Where torch comes from; the version is requirements.txt's pin.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False

# Debian's chromium: kaleido drives it to export figures as PNG. Not pinned: Debian replaces chromium with each
# security release, and a pinned version would stop the image from building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*

# The app runs as an unprivileged user; Hugging Face Docker Spaces expect uid 1000.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

COPY requirements.txt .
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.txt)" \
    && pip install -r requirements.txt

COPY --chown=1000:1000 . .
USER 1000

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['GRADIO_SERVER_PORT'], timeout=8)"]
CMD ["python", "app.py"]
