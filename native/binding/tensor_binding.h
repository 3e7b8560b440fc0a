#pragma once
#include <napi.h>

namespace ha::binding {
void init_tensor_binding(Napi::Env env, Napi::Object exports);
void init_hybrid_attention_binding(Napi::Env env, Napi::Object exports);
void init_teacher_ops_binding(Napi::Env env, Napi::Object exports);
void init_hybrid_decode_binding(Napi::Env env, Napi::Object exports);
void init_llama_ops_binding(Napi::Env env, Napi::Object exports);
}  // namespace ha::binding
