# gridvlm's app (app.py) as a container: docker build -t gridvlm . && docker run -p 7860:7860 gridvlm
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False

# The app runs as an unprivileged user; Hugging Face Docker Spaces expect uid 1000.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

COPY requirements.txt .
# Packages by name only: point pip at a CPU-only torch index yourself (PIP_EXTRA_INDEX_URL) to keep the image small.
RUN pip install -r requirements.txt

COPY --chown=user:user . .
USER user

EXPOSE 7860
CMD ["python", "app.py"]
