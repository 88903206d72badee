// dequantize_simd.h: the per-ISA kernel tables, built once.
#include "quant/dequantize_simd.h"

namespace lockstep::quant {

namespace {

struct Tables {
  DequantKernels avx2, avx512;
  Tables() {
    fill_dequant_avx2(avx2);
    avx512 = avx2;
    fill_dequant_avx512(avx512);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

DequantFn simd_dequantizer(Isa isa, TensorType type) {
  const uint32_t id = uint32_t(type);
  if (id >= uint32_t(kMaxDequantTypeId)) return nullptr;
  switch (isa) {
    case Isa::Avx512:
      return tables().avx512.fn[id];
    case Isa::Avx2:
      return tables().avx2.fn[id];
    default:
      return nullptr;
  }
}

}  // namespace lockstep::quant
