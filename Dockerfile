#
# gemma-serve container image. Builds with docker (BuildKit or the legacy builder), buildah and
# podman; no `# syntax=` line, so no frontend image is fetched. Once the base images below are
# present, the CPU image needs no network but the npm registry.
#
#   CPU (default):  docker build -t gemma-serve:0.1.0 .
#   CUDA 12:        docker build --build-arg CUDA=12 -t gemma-serve:0.1.0-cuda .
#   (podman build / buildah bud take the same arguments)
#
# Run: docker run -p 8000:8000 -v /path/to/gemma-2-2b-it:/models:ro -v gemma-data:/data gemma-serve:0.1.0
# (the CUDA image also needs `--gpus all`). The app runs compiled: the build stage compiles
# src/ to dist/ with the devDependencies (TypeScript); the image holds bin/, dist/ and the
# production node_modules only (`npm ci --omit=dev`), and runs them with plain node.

# Empty: the CPU image. 12: the CUDA 12 image (the runtime base is CUDA_IMAGE, and onnxruntime-node's
# CUDA 12 execution provider is installed, which needs NuGet and apt mirrors at build time).
ARG CUDA=
# Base images, pinned by digest (registry, name, a tag saying what the digest is, the digest):
# a rebuild gets the same bases until these lines change. The digests are the ones public
# Dockerfiles pin for these tags; pull them and compare (`docker buildx imagetools inspect`,
# `skopeo inspect`) when updating. Node 22 LTS: node:22-bookworm-slim, Node 22.23.1 as of 2026-07.
ARG NODE_IMAGE=docker.io/library/node:22-bookworm-slim@sha256:53ada149d435c38b14476cb57e4a7da73c15595aba79bd6971b547ceb6d018bf
# onnxruntime-node 1.30's CUDA provider is built for CUDA 12 with cuDNN 9 (linux/amd64 only).
ARG CUDA_IMAGE=docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04@sha256:59e0e4376a0f16d10b03d3a14344b80a866a1674cb4948cb318291387ac05010
# The image the app runs on: CUDA_IMAGE when CUDA is set, else NODE_IMAGE (see the runtime-base
# stage). Chosen by variable expansion on image references, never by an ARG in a stage name
# (`FROM runtime-${DEVICE}`): buildah and podman resolve such a name as an image to pull.
ARG CUDA_RUNTIME_IMAGE=${CUDA:+${CUDA_IMAGE}}

# ---- node-dist: Node.js (binary, headers, npm) for a base that has none (the CUDA one) ----
FROM ${NODE_IMAGE} AS node-dist
ARG CUDA
RUN set -eu; mkdir -p /out; \
    if [ -n "$CUDA" ]; then \
      mkdir -p /out/usr/local/bin /out/usr/local/include /out/usr/local/lib/node_modules; \
      cp -a /usr/local/bin/node /out/usr/local/bin/; \
      cp -a /usr/local/include/node /out/usr/local/include/; \
      cp -a /usr/local/lib/node_modules/npm /out/usr/local/lib/node_modules/; \
      ln -s ../lib/node_modules/npm/bin/npm-cli.js /out/usr/local/bin/npm; \
      ln -s ../lib/node_modules/npm/bin/npx-cli.js /out/usr/local/bin/npx; \
    fi

# ---- runtime-base: the variant's base with Node and the unprivileged user ----
FROM ${CUDA_RUNTIME_IMAGE:-${NODE_IMAGE}} AS runtime-base
ARG CUDA
# The device the image serves on, from CUDA; set by hand (the former --build-arg DEVICE=cuda)
# it would disagree with the base, so the check below refuses it.
ARG DEVICE=${CUDA:+cuda}
# Empty for the CPU image (its base is the Node image itself).
COPY --from=node-dist /out/ /
RUN set -eu; \
    case "$CUDA:$DEVICE" in :|12:cuda) ;; *) echo "CUDA=$CUDA DEVICE=$DEVICE: build the CPU image with neither, the CUDA 12 image with --build-arg CUDA=12 alone" >&2; exit 1 ;; esac; \
    groupadd --system --gid 10001 gemma; \
    useradd --system --uid 10001 --gid gemma --home-dir /app --shell /usr/sbin/nologin gemma; \
    node --version

# ---- build: src/ compiled to dist/ (needs the devDependencies; nothing of it ships but dist/) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
# --ignore-scripts: no native build and no onnxruntime-node download here (nothing of
# node_modules ships from this stage).
RUN npm ci --ignore-scripts --no-audit --no-fund && npm run build

# ---- deps: production dependencies only, installed on the runtime base of the variant ----
FROM runtime-base AS deps
ARG CUDA
WORKDIR /app
COPY package.json package-lock.json ./
# The postinstall builds the native runner (native/, build/gs_ort.node) with g++ against Node's
# headers and onnxruntime-node's libonnxruntime; --device cuda needs it (its KV cache stays on the
# GPU through an IoBinding), so the CUDA image installs g++ and checks it built. The CPU image
# does not need it (the stock binding runs the CPU path): no compiler, no apt mirror.
COPY native ./native
# npm ci runs `prepare` (scripts/build.mjs), which skips the build here: no TypeScript in a
# production install (dist/ comes from the build stage).
COPY scripts ./scripts
# onnxruntime-node's own install script would fetch the CUDA provider from NuGet: skipped
# (package.json's allowScripts for npm >= 11.16; ONNXRUNTIME_NODE_INSTALL=skip for the npm 10
# the Node 22 image bundles). The CUDA image then runs it explicitly with
# ONNXRUNTIME_NODE_INSTALL=cuda12 (`npm run install:cuda`) and fails unless the provider landed.
RUN set -eux; \
    if [ -n "$CUDA" ]; then \
      apt-get update; apt-get install -y --no-install-recommends g++; rm -rf /var/lib/apt/lists/*; \
    fi; \
    ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund; \
    if [ -n "$CUDA" ]; then \
      ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js; \
      test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so; \
      node native/build.mjs --strict; \
    fi; \
    mkdir -p build; \
    npm cache clean --force

# ---- runtime ----
FROM runtime-base AS runtime
ARG CUDA
# cuda for the CUDA image, else cpu (an ARG default may expand an earlier ARG; ENV cannot branch).
ARG DEVICE=${CUDA:+cuda}
LABEL org.opencontainers.image.title="gemma-serve" \
      org.opencontainers.image.description="OpenAI-compatible inference server for Gemma 2 on ONNX Runtime" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
ENV NODE_ENV=production \
    GEMMA_SERVE_HOST=0.0.0.0 \
    GEMMA_SERVE_PORT=8000 \
    GEMMA_SERVE_MODEL=/models \
    GEMMA_SERVE_DATA_DIR=/data \
    GEMMA_SERVE_DEVICE=${DEVICE:-cpu}
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
