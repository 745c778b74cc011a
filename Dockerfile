# Ducho with the pinned stack. CPU by default; for NVIDIA GPUs build with
#   docker build --build-arg EXTRAS=all,dev -t ducho .   and run with --gpus all
# (the torch 2.14.1 wheel on PyPI is a CUDA build and also runs on the CPU).
FROM python:3.11-slim

ARG EXTRAS=text,vision,audio,handcrafted,open_clip,onnx,tensorflow,dev
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    TF_CPP_MIN_LOG_LEVEL=2

# gcc: webrtcvad (resemblyzer's dependency) is built from source
RUN apt-get update && apt-get install -y --no-install-recommends make gcc libc6-dev && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ducho
COPY pyproject.toml README.md Makefile ./
COPY src ./src
COPY tests ./tests
COPY benchmarks ./benchmarks
RUN pip install --upgrade pip && pip install -e ".[${EXTRAS}]" \
    && case "${EXTRAS}" in *tensorflow*|*all*) pip install --no-deps musicnn==0.1.0 keras-hub==0.32.0 ;; esac

# features and logs go to the mounted volume: docker run -v $PWD/data:/data ducho run /data/config.yml
WORKDIR /data
ENTRYPOINT ["ducho"]
CMD ["--help"]
