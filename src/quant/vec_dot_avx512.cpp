// AVX-512 kernels of vec_dot.h (none yet: Avx512 uses the AVX2 kernels).
#include "quant/vec_dot_internal.h"

namespace lockstep::quant {
void fill_avx512_kernels(DotKernels&) {}
}  // namespace lockstep::quant
