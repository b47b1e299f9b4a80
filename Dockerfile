# softlabels API / worker image. CI does not build it (no Docker engine there): keep it simple.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# CPU build of torch first, from PyTorch's CPU index: the default wheel is a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.3"

COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 10001 softlabels

USER softlabels
EXPOSE 8000
# DATABASE_URL must be set: containers use a PostgreSQL service, not the embedded server.
CMD ["softlabels", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-migrate", "--no-worker"]
