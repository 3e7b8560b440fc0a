#include "binding/completion.h"

#include <memory>

namespace ha::binding {

namespace {
void call_js(Napi::Env env, Napi::Function, void*, JsContinuation* data);
using Tsfn = Napi::TypedThreadSafeFunction<void, JsContinuation, call_js>;
Tsfn g_tsfn;
int g_outstanding = 0;  // touched on the JS thread only

void call_js(Napi::Env env, Napi::Function, void*, JsContinuation* data) {
  std::unique_ptr<JsContinuation> fn(data);
  if (env == nullptr) return;  // environment shutting down
  (*fn)(env);
  if (--g_outstanding == 0) g_tsfn.Unref(env);
}
}  // namespace

void completion_init(Napi::Env env) {
  g_tsfn = Tsfn::New(env, "hybrid-attention-completion", 0, 1);
  g_tsfn.Unref(env);
}

void completion_begin(Napi::Env env) {
  if (g_outstanding++ == 0) g_tsfn.Ref(env);
}

void completion_post(JsContinuation fn) {
  g_tsfn.NonBlockingCall(new JsContinuation(std::move(fn)));
}

}  // namespace ha::binding
