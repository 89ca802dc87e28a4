# syntax=docker/dockerfile:1
#
# gemma-serve container image.
#
#   CPU (default):  docker build -t gemma-serve:0.1.0 .
#   CUDA 12:        docker build --build-arg DEVICE=cuda -t gemma-serve:0.1.0-cuda .
#
# Run: docker run -p 8000:8000 -v /path/to/gemma-2-2b-it:/models:ro -v gemma-data:/data gemma-serve:0.1.0
# (the CUDA image also needs `--gpus all`). The app runs compiled: the build stage compiles
# src/ to dist/ with the devDependencies (TypeScript); the image holds bin/, dist/ and the
# production node_modules only (`npm ci --omit=dev`), and runs them with plain node.

# cpu or cuda: picks the runtime base (stage runtime-${DEVICE} below; any other value fails
# at that FROM) and whether onnxruntime-node's CUDA 12 execution provider binaries are installed.
ARG DEVICE=cpu
ARG NODE_IMAGE=node:20-bookworm-slim
# onnxruntime-node 1.30's CUDA provider is built for CUDA 12 with cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# Node.js 20 itself (binary and npm), copied into the CUDA base, which has no Node.
FROM ${NODE_IMAGE} AS node

# ---- runtime bases: the same user and layout on both ----
FROM ${NODE_IMAGE} AS runtime-cpu
RUN groupadd --system --gid 10001 gemma \
 && useradd --system --uid 10001 --gid gemma --home-dir /app --shell /usr/sbin/nologin gemma

FROM ${CUDA_IMAGE} AS runtime-cuda
COPY --from=node /usr/local/bin/node /usr/local/bin/node
# Node's headers, for the native runner's build in the deps stage.
COPY --from=node /usr/local/include/node /usr/local/include/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --system --gid 10001 gemma \
 && useradd --system --uid 10001 --gid gemma --home-dir /app --shell /usr/sbin/nologin gemma \
 && node --version

# ---- build: src/ compiled to dist/ (needs the devDependencies; nothing of it ships but dist/) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
# --ignore-scripts: no native build here (the deps stage builds it on the runtime base).
RUN npm ci --ignore-scripts --no-audit --no-fund && npm run build

# ---- deps: production dependencies only, installed on the runtime base of the variant ----
FROM runtime-${DEVICE} AS deps
ARG DEVICE
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The postinstall builds the native runner (native/, build/gs_ort.node) with g++ against Node's
# headers and onnxruntime-node's libonnxruntime; --device cuda needs it (its KV cache stays on the
# GPU through an IoBinding), so the CUDA image checks it built.
COPY native ./native
# npm ci runs `prepare` (scripts/build.mjs), which skips the build here: no TypeScript in a
# production install (dist/ comes from the build stage).
COPY scripts ./scripts
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
# .npmrc skips onnxruntime-node's download of the CUDA binaries (CPU binaries ship in the
# package). For DEVICE=cuda, ONNXRUNTIME_NODE_INSTALL=cuda12 (which its install script reads
# before the npm config) fetches the CUDA 12 execution provider from NuGet; running the
# script again explicitly makes that independent of whether npm ran install scripts.
RUN set -eux; \
    if [ "$DEVICE" = cuda ]; then export ONNXRUNTIME_NODE_INSTALL=cuda12; fi; \
    npm ci --omit=dev --no-audit --no-fund; \
    if [ "$DEVICE" = cuda ]; then \
      node node_modules/onnxruntime-node/script/install.js; \
      test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so; \
      node native/build.mjs --strict; \
    fi; \
    mkdir -p build; \
    npm cache clean --force

# ---- runtime ----
FROM runtime-${DEVICE} AS runtime
ARG DEVICE
LABEL org.opencontainers.image.title="gemma-serve" \
      org.opencontainers.image.description="OpenAI-compatible inference server for Gemma 2 on ONNX Runtime" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
ENV NODE_ENV=production \
    GEMMA_SERVE_HOST=0.0.0.0 \
    GEMMA_SERVE_PORT=8000 \
    GEMMA_SERVE_MODEL=/models \
    GEMMA_SERVE_DATA_DIR=/data \
    GEMMA_SERVE_DEVICE=${DEVICE}
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=deps --chown=root:root /app/build ./build
COPY --chown=root:root package.json ./
COPY --chown=root:root bin ./bin
COPY --from=build --chown=root:root /app/dist ./dist
# /models: the checkpoint or export to serve (mount it, read-only is fine).
# /data: where checkpoints are exported to ONNX once and cached (must be writable).
RUN mkdir -p /models /data && chown gemma:gemma /data
VOLUME ["/models", "/data"]
USER 10001:10001
EXPOSE 8000
# /health answers 200 as soon as the server listens (also while the model loads); /ready
# tells when the model is in. Node's fetch, since the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.GEMMA_SERVE_PORT||8000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM drains: /ready turns 503, in-flight requests finish (up to --shutdown-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/gemma-serve.js"]
CMD ["serve"]
