// Module entry: registers the tensor API and every op's binding.
#include <napi.h>

#include "binding/completion.h"
#include "binding/tensor_binding.h"
#include "core/parallel.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ha::binding::completion_init(env);
  ha::binding::init_tensor_binding(env, exports);
  ha::binding::init_hybrid_attention_binding(env, exports);
  ha::binding::init_teacher_ops_binding(env, exports);
  ha::binding::init_hybrid_decode_binding(env, exports);
  ha::binding::init_llama_ops_binding(env, exports);
#ifdef HA_WITH_CUDA
  exports.Set("compiledWithCuda", true);
#else
  exports.Set("compiledWithCuda", false);
#endif
  exports.Set("cpuThreads", ha::cpu_thread_count());
  return exports;
}
}  // namespace

NODE_API_MODULE(hybrid_attention, Init)
