// Tensor-core forward fast path: not in this build yet. Declining sends every call to the
// generic path (ha_forward.cu), which is correct for every mode, geometry and dtype.
#include "ops/hybrid_attention/ha_common.cuh"

namespace ha {
namespace cuda_detail {

bool launch_forward_fast(const KP&, DType, cudaStream_t) { return false; }

}  // namespace cuda_detail
}  // namespace ha
