// Hands results from device workers back to the JS thread. One thread-safe function serves
// every pending read; it keeps the event loop alive only while reads are outstanding.
#pragma once
#include <napi.h>

#include <functional>

namespace ha::binding {

using JsContinuation = std::function<void(Napi::Env)>;

void completion_init(Napi::Env env);
// Called on the JS thread when an async result is started (keeps the loop alive).
void completion_begin(Napi::Env env);
// Called on any thread: runs `fn` on the JS thread, then releases the hold taken by begin.
void completion_post(JsContinuation fn);

}  // namespace ha::binding
