// The addon's custom-operator domain for CPU sessions (q4op.cc).
#pragma once

#include "onnxruntime_c_api.h"

// The ONNX domain of gemma-serve's own operators; a graph that uses them imports it at version 1.
inline constexpr const char* kGemmaServeDomain = "ai.gemma_serve";

// The process-wide domain holding MatMulQ4 and PagedAttention (attnop.h), created on first use; add it to a session's options.
OrtStatusPtr GemmaServeOpDomain(const OrtApi* api, OrtCustomOpDomain** out);
