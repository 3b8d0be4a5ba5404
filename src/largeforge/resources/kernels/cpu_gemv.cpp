// One-row bf16 linear layers (`y = x W^T + b`) on a CPU with AVX-512 BF16, near the memory
// bandwidth: the serving engine's batch-1 decode steps.
//
// oneDNN's prepacked bf16 linear reads SmolLM2-135M's 269 MB of weights at about 20 GB/s for
// one row, against 25-33 GB/s for a plain sum of the same bytes. This kernel stores a weight
// [N, K] as [N/64][K/2][64][2]: for each pair of inputs, the 64 outputs of a block sit in one
// 128-byte run, so a block's weights stream through memory once, in order, and
// `vdpbf16ps` multiplies each pair by the broadcast input pair and accumulates in fp32 into
// four 16-lane registers (no horizontal sums). Blocks are split across torch's threads; the
// output is rounded to bf16 once. Loaded by largeforge.adapters.hf.cpu_kernels (torch's JIT
// extension build, cached per source and flags).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;   // outputs per block: four registers of 16 fp32 lanes
constexpr int64_t kMaxRows = 4;  // rows of x one call takes

// weight [N, K] bf16, N a multiple of 64, K even -> [N/64, K/2, 64, 2]
at::Tensor pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.dim() == 2,
              "gemv pack: the weight must be a 2-D bfloat16 tensor");
  const int64_t n = weight.size(0), k = weight.size(1);
  TORCH_CHECK(n % kBlock == 0 && k % 2 == 0 && k > 0,
              "gemv pack: needs out_features a multiple of 64 and in_features even, got ", n,
              " x ", k);
  return weight.contiguous().view({n / kBlock, kBlock, k / 2, 2}).permute({0, 2, 1, 3}).contiguous();
}

// x [..., K] bf16 with at most 4 rows; packed from `pack`; bias [N] fp32 or none.
at::Tensor gemv(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.dim() == 4 &&
                  packed.size(2) == kBlock && packed.size(3) == 2 && packed.is_contiguous(),
              "gemv: the weight must come from gemv pack");
  const int64_t blocks = packed.size(0), pairs = packed.size(1);
  const int64_t n = blocks * kBlock, k = pairs * 2;
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.size(-1) == k,
              "gemv: x must be bfloat16 with ", k, " features");
  const at::Tensor rows = x.reshape({-1, k}).contiguous();
  const int64_t m = rows.size(0);
  TORCH_CHECK(m >= 1 && m <= kMaxRows, "gemv: takes 1 to 4 rows, got ", m);
  const float* b = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == n && bias->is_contiguous(),
                "gemv: the bias must be a contiguous fp32 tensor of ", n, " values");
    b = bias->const_data_ptr<float>();
  }
  at::Tensor out = at::empty({m, n}, x.options());
  const auto* xs = reinterpret_cast<const int32_t*>(rows.const_data_ptr<at::BFloat16>());
  const auto* ws = reinterpret_cast<const __m512i*>(packed.const_data_ptr<at::BFloat16>());
  auto* ys = reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>());

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      __m512 acc[kMaxRows][4];
      for (auto& row : acc)
        for (auto& lane : row) lane = _mm512_setzero_ps();
      const __m512i* w = ws + block * pairs * 4;
      for (int64_t p = 0; p < pairs; ++p, w += 4) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w);
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + 1);
        const __m512bh w2 = (__m512bh)_mm512_loadu_si512(w + 2);
        const __m512bh w3 = (__m512bh)_mm512_loadu_si512(w + 3);
        for (int64_t r = 0; r < m; ++r) {
          const __m512bh pair = (__m512bh)_mm512_set1_epi32(xs[r * pairs + p]);
          acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, pair);
          acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, pair);
          acc[r][2] = _mm512_dpbf16_ps(acc[r][2], w2, pair);
          acc[r][3] = _mm512_dpbf16_ps(acc[r][3], w3, pair);
        }
      }
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t i = 0; i < 4; ++i) {
          const int64_t column = block * kBlock + i * 16;
          __m512 value = acc[r][i];
          if (b != nullptr) value = _mm512_add_ps(value, _mm512_loadu_ps(b + column));
          const __m256bh rounded = _mm512_cvtneps_pbh(value);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(ys + r * n + column), (__m256i)rounded);
        }
      }
    }
  });
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  return out.view(shape);
}

}  // namespace

TORCH_LIBRARY(largeforge_cpu, m) {
  m.def("gemv_pack(Tensor weight) -> Tensor");
  m.def("gemv(Tensor x, Tensor packed, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(largeforge_cpu, CPU, m) {
  m.impl("gemv_pack", &pack);
  m.impl("gemv", &gemv);
}
