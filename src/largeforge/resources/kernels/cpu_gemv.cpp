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
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

// y[m, n] = x[m, k] W^T (+ bias), bf16 in and out, fp32 accumulation; `packed` from `pack`.
void gemv_rows(const uint16_t* x, int64_t m, const at::Tensor& packed, const float* bias,
               uint16_t* y) {
  const int64_t blocks = packed.size(0), pairs = packed.size(1);
  const int64_t n = blocks * kBlock;
  const auto* xs = reinterpret_cast<const int32_t*>(x);
  const auto* ws = reinterpret_cast<const __m512i*>(packed.const_data_ptr<at::BFloat16>());
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
          if (bias != nullptr) value = _mm512_add_ps(value, _mm512_loadu_ps(bias + column));
          const __m256bh rounded = _mm512_cvtneps_pbh(value);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + r * n + column), (__m256i)rounded);
        }
      }
    }
  });
}

void check_packed(const at::Tensor& packed) {
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.dim() == 4 &&
                  packed.size(2) == kBlock && packed.size(3) == 2 && packed.is_contiguous(),
              "gemv: the weight must come from gemv_pack");
}

const float* bias_data(const std::optional<at::Tensor>& bias, int64_t n) {
  if (!bias.has_value()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == n && bias->is_contiguous(),
              "gemv: the bias must be a contiguous fp32 tensor of ", n, " values");
  return bias->const_data_ptr<float>();
}

const uint16_t* bf16_data(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}

// x [..., K] bf16 with at most 4 rows; packed from `pack`; bias [N] fp32 or none.
at::Tensor gemv(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias) {
  check_packed(packed);
  const int64_t n = packed.size(0) * kBlock, k = packed.size(1) * 2;
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.size(-1) == k,
              "gemv: x must be bfloat16 with ", k, " features");
  const at::Tensor rows = x.reshape({-1, k}).contiguous();
  const int64_t m = rows.size(0);
  TORCH_CHECK(m >= 1 && m <= kMaxRows, "gemv: takes 1 to 4 rows, got ", m);
  const float* b = bias_data(bias, n);
  at::Tensor out = at::empty({m, n}, x.options());
  gemv_rows(bf16_data(rows), m, packed, b,
            reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>()));
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  return out.view(shape);
}

// -- one decoder layer of a Llama model for one row ----------------------------------------
//
// Every step rounds to bf16 where transformers' bf16 forward does (after the norm, each
// projection, each rotary product and their sum, silu, the gate product and each residual
// add), so the cache it writes and the hidden state it returns follow that forward; the
// attention accumulates in fp32 like torch's flash kernel, in its own order.

inline float widen(uint16_t raw) {
  const uint32_t bits = static_cast<uint32_t>(raw) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

void widen_row(const uint16_t* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &bits, sizeof(float));
  }
}

inline uint16_t narrow(float value) {
  const c10::BFloat16 rounded(value);  // round to nearest even
  return rounded.x;
}

// transformers' RMSNorm: fp32 statistics, the normalized row rounded to bf16, times the
// bf16 weight, rounded again.
void rms_norm(const uint16_t* x, const uint16_t* weight, int64_t n, double eps, uint16_t* y) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = widen(x[i]);
    sum += v * v;
  }
  const float scale = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = narrow(widen(weight[i]) * widen(narrow(widen(x[i]) * scale)));
  }
}

// Llama's rotate-half rotary embedding of one head, in place.
void rotate(uint16_t* head, const uint16_t* cos, const uint16_t* sin, int64_t dim) {
  const int64_t half = dim / 2;
  std::vector<uint16_t> out(dim);
  for (int64_t d = 0; d < dim; ++d) {
    const float turned = d < half ? -widen(head[d + half]) : widen(head[d - half]);
    const float a = widen(narrow(widen(head[d]) * widen(cos[d])));
    const float b = widen(narrow(turned * widen(sin[d])));
    out[d] = narrow(a + b);
  }
  std::memcpy(head, out.data(), dim * sizeof(uint16_t));
}

at::Tensor decode_layer(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                        const at::Tensor& key_cache, const at::Tensor& value_cache,
                        int64_t length, const at::Tensor& norm_in, double eps_in,
                        const at::Tensor& norm_mid, double eps_mid, const at::Tensor& qkv,
                        const std::optional<at::Tensor>& qkv_bias, const at::Tensor& out_proj,
                        const std::optional<at::Tensor>& out_bias, const at::Tensor& gate_up,
                        const std::optional<at::Tensor>& gate_up_bias, const at::Tensor& down,
                        const std::optional<at::Tensor>& down_bias, int64_t query_heads,
                        int64_t key_heads, double scaling) {
  for (const auto* packed : {&qkv, &out_proj, &gate_up, &down}) check_packed(*packed);
  const int64_t width = hidden.size(-1), dim = key_cache.size(3);
  TORCH_CHECK(hidden.scalar_type() == at::kBFloat16 && hidden.numel() == width,
              "decode_layer: hidden must be one bfloat16 row");
  TORCH_CHECK(key_cache.scalar_type() == at::kBFloat16 && key_cache.dim() == 4 &&
                  key_cache.size(0) == 1 && key_cache.size(1) == key_heads &&
                  key_cache.stride(3) == 1 && value_cache.sizes() == key_cache.sizes() &&
                  value_cache.strides() == key_cache.strides(),
              "decode_layer: the caches must be [1, key_heads, capacity, dim] bfloat16");
  TORCH_CHECK(length >= 0 && length < key_cache.size(2), "decode_layer: no room in the cache");
  TORCH_CHECK(query_heads % key_heads == 0 && cos.numel() == dim && sin.numel() == dim &&
                  qkv.size(0) * kBlock == (query_heads + 2 * key_heads) * dim &&
                  qkv.size(1) * 2 == width && out_proj.size(1) * 2 == query_heads * dim &&
                  out_proj.size(0) * kBlock == width && gate_up.size(1) * 2 == width &&
                  down.size(0) * kBlock == width && down.size(1) * 2 * 2 == gate_up.size(0) * kBlock,
              "decode_layer: the weights do not fit the layer's shapes");
  const at::Tensor h = hidden.contiguous(), c = cos.contiguous(), s = sin.contiguous();
  const uint16_t* h0 = bf16_data(h);
  std::vector<uint16_t> normed(width), heads((query_heads + 2 * key_heads) * dim);
  rms_norm(h0, bf16_data(norm_in), width, eps_in, normed.data());
  gemv_rows(normed.data(), 1, qkv, bias_data(qkv_bias, heads.size()), heads.data());
  for (int64_t head = 0; head < query_heads + key_heads; ++head) {
    rotate(heads.data() + head * dim, bf16_data(c), bf16_data(s), dim);
  }
  auto* keys = reinterpret_cast<uint16_t*>(key_cache.data_ptr<at::BFloat16>());
  auto* values = reinterpret_cast<uint16_t*>(value_cache.data_ptr<at::BFloat16>());
  const int64_t head_stride = key_cache.stride(1), row_stride = key_cache.stride(2);
  for (int64_t g = 0; g < key_heads; ++g) {
    std::memcpy(keys + g * head_stride + length * row_stride,
                heads.data() + (query_heads + g) * dim, dim * sizeof(uint16_t));
    std::memcpy(values + g * head_stride + length * row_stride,
                heads.data() + (query_heads + key_heads + g) * dim, dim * sizeof(uint16_t));
  }
  const int64_t positions = length + 1, group = query_heads / key_heads;
  std::vector<uint16_t> attended(query_heads * dim);
  at::parallel_for(0, query_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(positions), acc(dim), q(dim), row(dim);
    for (int64_t head = begin; head < end; ++head) {
      const int64_t g = head / group;
      widen_row(heads.data() + head * dim, q.data(), dim);
      float top = -INFINITY;
      for (int64_t j = 0; j < positions; ++j) {
        widen_row(keys + g * head_stride + j * row_stride, row.data(), dim);
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < dim; ++d) dot += q[d] * row[d];
        scores[j] = dot * static_cast<float>(scaling);
        top = std::max(top, scores[j]);
      }
      float total = 0.f;
      for (int64_t j = 0; j < positions; ++j) {
        scores[j] = std::exp(scores[j] - top);
        total += scores[j];
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < positions; ++j) {
        widen_row(values + g * head_stride + j * row_stride, row.data(), dim);
        const float weight = scores[j];
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) acc[d] += weight * row[d];
      }
      for (int64_t d = 0; d < dim; ++d) attended[head * dim + d] = narrow(acc[d] / total);
    }
  });
  std::vector<uint16_t> projected(width), mid(width);
  gemv_rows(attended.data(), 1, out_proj, bias_data(out_bias, width), projected.data());
  for (int64_t i = 0; i < width; ++i) mid[i] = narrow(widen(h0[i]) + widen(projected[i]));
  rms_norm(mid.data(), bf16_data(norm_mid), width, eps_mid, normed.data());
  const int64_t inner = gate_up.size(0) * kBlock / 2;
  std::vector<uint16_t> gated(2 * inner), act(inner);
  gemv_rows(normed.data(), 1, gate_up, bias_data(gate_up_bias, 2 * inner), gated.data());
  for (int64_t i = 0; i < inner; ++i) {
    const float g = widen(gated[i]);
    const float silu = widen(narrow(g / (1.f + std::exp(-g))));
    act[i] = narrow(silu * widen(gated[inner + i]));
  }
  gemv_rows(act.data(), 1, down, bias_data(down_bias, width), projected.data());
  at::Tensor out = at::empty_like(h);
  auto* o = reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>());
  for (int64_t i = 0; i < width; ++i) o[i] = narrow(widen(mid[i]) + widen(projected[i]));
  return out;
}

}  // namespace

TORCH_LIBRARY(largeforge_cpu, m) {
  m.def("gemv_pack(Tensor weight) -> Tensor");
  m.def("gemv(Tensor x, Tensor packed, Tensor? bias) -> Tensor");
  m.def(
      "decode_layer(Tensor hidden, Tensor cos, Tensor sin, Tensor(a!) key_cache, "
      "Tensor(b!) value_cache, int length, Tensor norm_in, float eps_in, Tensor norm_mid, "
      "float eps_mid, Tensor qkv, Tensor? qkv_bias, Tensor out_proj, Tensor? out_bias, "
      "Tensor gate_up, Tensor? gate_up_bias, Tensor down, Tensor? down_bias, int query_heads, "
      "int key_heads, float scaling) -> Tensor");
}

TORCH_LIBRARY_IMPL(largeforge_cpu, CPU, m) {
  m.impl("gemv_pack", &pack);
  m.impl("gemv", &gemv);
  m.impl("decode_layer", &decode_layer);
}
