// One-row bf16 linear layers (`y = x W^T + b`) and a whole one-row decode step of a Llama
// model on a CPU with AVX-512 BF16, near the memory bandwidth: the serving engine's batch-1
// decoding.
//
// oneDNN's prepacked bf16 linear reads SmolLM2-135M's 269 MB of weights at about 20 GB/s for
// one row, against 25-33 GB/s for a plain sum of the same bytes. `gemv` stores a weight
// [N, K] as [N/16][K/2][16][2]: for each pair of inputs, the 16 outputs of a block sit in one
// 64-byte line, so a block's weights stream through memory once, in order, and `vdpbf16ps`
// multiplies each pair by the broadcast input pair, accumulating in registers of 16 fp32
// lanes (no horizontal sums). A thread walks four blocks at once, four streams through
// memory, which reaches the bandwidth of a plain sum where one stream reaches about 70 % of
// it. Blocks of 16 outputs split evenly across threads even for the 576-wide projections of a
// small model.
//
// `decode_row` runs every layer, the final norm and the head for one row inside one parallel
// region: each thread keeps its own copy of the small per-row state (hidden row, norms,
// activations), the projections and the attention heads are split across threads, and a
// barrier separates the stages, so a step pays one fork and join instead of five a layer.
//
// Loaded by largeforge.adapters.hf.cpu_kernels (torch's JIT extension build, cached per
// source and flags).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;   // outputs per block: one register of 16 fp32 lanes
constexpr int64_t kMaxRows = 4;  // rows of x one `gemv` call takes

// weight [N, K] bf16, N a multiple of 16, K even -> [N/16, K/2, 16, 2]
at::Tensor pack(const at::Tensor& weight) {
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.dim() == 2,
              "gemv pack: the weight must be a 2-D bfloat16 tensor");
  const int64_t n = weight.size(0), k = weight.size(1);
  TORCH_CHECK(n % kBlock == 0 && k % 2 == 0 && k > 0,
              "gemv pack: needs out_features a multiple of 16 and in_features even, got ", n,
              " x ", k);
  return weight.contiguous().view({n / kBlock, kBlock, k / 2, 2}).permute({0, 2, 1, 3}).contiguous();
}

// 16 fp32 outputs (+ their bias, where there is one) rounded to bf16 into row[column...].
inline void store_outputs(__m512 value, const float* bias, int64_t column, uint16_t* row) {
  if (bias != nullptr) value = _mm512_add_ps(value, _mm512_loadu_ps(bias + column));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + column), (__m256i)_mm512_cvtneps_pbh(value));
}

// Blocks [first, first + S) of y[M, n] = x[M, k] W^T (+ bias): bf16 in and out, fp32
// accumulation (even and odd input pairs in two registers, summed at the end). The S blocks
// are S separate streams through memory: one stream a thread leaves a CPU's memory
// bandwidth unused (19-20 GB/s against 28 for a plain sum here), four reach it.
template <int M, int S>
void gemv_blocks(const int32_t* xs, const __m512i* w, int64_t pairs, int64_t n,
                 const float* bias, uint16_t* y, int64_t first) {
  __m512 acc[M][S][2];
  for (int r = 0; r < M; ++r)
    for (int s = 0; s < S; ++s) acc[r][s][0] = acc[r][s][1] = _mm512_setzero_ps();
  const __m512i* wb = w + first * pairs;
  int64_t p = 0;
  for (; p + 2 <= pairs; p += 2) {
    for (int r = 0; r < M; ++r) {
      const __m512bh even = (__m512bh)_mm512_set1_epi32(xs[r * pairs + p]);
      const __m512bh odd = (__m512bh)_mm512_set1_epi32(xs[r * pairs + p + 1]);
      for (int s = 0; s < S; ++s) {
        const __m512i* ws = wb + s * pairs + p;
        acc[r][s][0] = _mm512_dpbf16_ps(acc[r][s][0], (__m512bh)_mm512_loadu_si512(ws), even);
        acc[r][s][1] = _mm512_dpbf16_ps(acc[r][s][1], (__m512bh)_mm512_loadu_si512(ws + 1), odd);
      }
    }
  }
  if (p < pairs) {
    for (int r = 0; r < M; ++r) {
      const __m512bh last = (__m512bh)_mm512_set1_epi32(xs[r * pairs + p]);
      for (int s = 0; s < S; ++s) {
        const __m512i* ws = wb + s * pairs + p;
        acc[r][s][0] = _mm512_dpbf16_ps(acc[r][s][0], (__m512bh)_mm512_loadu_si512(ws), last);
      }
    }
  }
  for (int r = 0; r < M; ++r) {
    for (int s = 0; s < S; ++s) {
      store_outputs(_mm512_add_ps(acc[r][s][0], acc[r][s][1]), bias, (first + s) * kBlock,
                    y + r * n);
    }
  }
}

// Blocks [begin, end) of M rows, in groups of up to S blocks.
template <int M, int S>
void gemv_rows(const int32_t* xs, const __m512i* w, int64_t pairs, int64_t n, const float* bias,
               uint16_t* y, int64_t begin, int64_t end) {
  int64_t block = begin;
  for (; block + S <= end; block += S) gemv_blocks<M, S>(xs, w, pairs, n, bias, y, block);
  for (; block < end; ++block) gemv_blocks<M, 1>(xs, w, pairs, n, bias, y, block);
}

void gemv_range(const uint16_t* x, int64_t m, const at::Tensor& packed, const float* bias,
                uint16_t* y, int64_t begin, int64_t end) {
  const int64_t pairs = packed.size(1), n = packed.size(0) * kBlock;
  const auto* w = reinterpret_cast<const __m512i*>(packed.const_data_ptr<at::BFloat16>());
  const auto* xs = reinterpret_cast<const int32_t*>(x);
  switch (m) {  // streams for as many accumulators as the registers hold
    case 1: return gemv_rows<1, 4>(xs, w, pairs, n, bias, y, begin, end);
    case 2: return gemv_rows<2, 2>(xs, w, pairs, n, bias, y, begin, end);
    case 3: return gemv_rows<3, 2>(xs, w, pairs, n, bias, y, begin, end);
    default: return gemv_rows<4, 2>(xs, w, pairs, n, bias, y, begin, end);
  }
}

// This thread's even share [begin, end) of `count` items.
inline std::pair<int64_t, int64_t> share(int64_t count, int thread, int threads) {
  return {count * thread / threads, count * (thread + 1) / threads};
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

// `x` [..., K] bf16 with 1 to `max_rows` rows times a `pack`ed weight (+ bias [N] fp32 or
// none) into [..., N] bf16: `blocks(rows, m, bias, y, begin, end)` computes the output blocks
// [begin, end), split across torch's threads.
template <typename Blocks>
at::Tensor linear_rows(const char* name, const at::Tensor& x, const at::Tensor& packed,
                       const std::optional<at::Tensor>& bias, int64_t max_rows,
                       const Blocks& blocks) {
  check_packed(packed);
  const int64_t n = packed.size(0) * kBlock, k = packed.size(1) * 2;
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.size(-1) == k, name,
              ": x must be bfloat16 with ", k, " features");
  const at::Tensor rows = x.reshape({-1, k}).contiguous();
  const int64_t m = rows.size(0);
  TORCH_CHECK(m >= 1 && m <= max_rows, name, ": takes 1 to ", max_rows, " rows, got ", m);
  const float* b = bias_data(bias, n);
  at::Tensor out = at::empty({m, n}, x.options());
  auto* y = reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>());
  at::parallel_for(0, packed.size(0), 1, [&](int64_t begin, int64_t end) {
    blocks(bf16_data(rows), m, b, y, begin, end);
  });
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = n;
  return out.view(shape);
}

// x [..., K] bf16 with at most 4 rows; packed from `pack`; bias [N] fp32 or none.
at::Tensor gemv(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias) {
  return linear_rows("gemv", x, packed, bias, kMaxRows,
                     [&](const uint16_t* rows, int64_t m, const float* b, uint16_t* y,
                         int64_t begin, int64_t end) {
                       gemv_range(rows, m, packed, b, y, begin, end);
                     });
}

// -- up to 16 rows on AMX tiles (`gemm_tiles`) ----------------------------------------------
//
// The gemv layout is AMX's: 16 input pairs of a block are 16 rows of 64 bytes, one B tile, so
// `tdpbf16ps` multiplies a tile of up to 16 rows of x (16 pairs of inputs) by it into a
// 16 x 16 fp32 tile. Four blocks at a time (four streams, four accumulator tiles, two B
// tiles in turn), the weights read once for all rows: a 16-row decode step's linears near
// the memory bandwidth, where oneDNN's bf16 path reads them at about 17 GB/s here.

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

constexpr int64_t kTileRows = 16;  // rows of x one `gemm_tiles` call takes
constexpr int64_t kTileDepth = 32;  // inputs a tile step takes (16 pairs)

bool tiles_permitted() {
  // Linux hands out AMX state only on request (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA).
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

bool tiles_enable() {
  static const bool permitted = tiles_permitted();
  return permitted;
}

__attribute__((target("amx-tile,amx-bf16"))) void load_tile_config(int64_t m) {
  TileConfig config;
  config.rows[0] = static_cast<uint8_t>(m);  // x: m rows of 32 inputs
  config.colsb[0] = 64;
  for (int t = 1; t <= 2; ++t) {  // weights: 16 pairs of 16 outputs
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  for (int t = 4; t < 8; ++t) {  // results: m rows of 16 fp32
    config.rows[t] = static_cast<uint8_t>(m);
    config.colsb[t] = 64;
  }
  _tile_loadconfig(&config);
}

// Round m rows of 16 fp32 results (plus bias) to bf16 into y's columns of `block`.
void store_tile_rows(const float* result, int64_t m, int64_t n, const float* bias, int64_t block,
                     uint16_t* y) {
  for (int64_t r = 0; r < m; ++r) {
    store_outputs(_mm512_loadu_ps(result + r * kBlock), bias, block * kBlock, y + r * n);
  }
}

__attribute__((target("amx-tile,amx-bf16"))) void tile_blocks(
    const uint16_t* x, int64_t m, int64_t k, const uint16_t* w, int64_t n, const float* bias,
    uint16_t* y, int64_t begin, int64_t end) {
  const int64_t pairs = k / 2, steps = k / kTileDepth, block_size = pairs * 2 * kBlock;
  const int64_t x_stride = k * 2;
  float result[kTileRows * kBlock];
  load_tile_config(m);
  int64_t block = begin;
  for (; block + 4 <= end; block += 4) {
    const uint16_t* w0 = w + block * block_size;
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t offset = step * kTileDepth * kBlock;  // 16 pairs of 16 outputs
      _tile_loadd(0, x + step * kTileDepth, x_stride);
      _tile_loadd(1, w0 + offset, 64);
      _tile_dpbf16ps(4, 0, 1);
      _tile_loadd(2, w0 + block_size + offset, 64);
      _tile_dpbf16ps(5, 0, 2);
      _tile_loadd(1, w0 + 2 * block_size + offset, 64);
      _tile_dpbf16ps(6, 0, 1);
      _tile_loadd(2, w0 + 3 * block_size + offset, 64);
      _tile_dpbf16ps(7, 0, 2);
    }
    _tile_stored(4, result, 64);
    store_tile_rows(result, m, n, bias, block, y);
    _tile_stored(5, result, 64);
    store_tile_rows(result, m, n, bias, block + 1, y);
    _tile_stored(6, result, 64);
    store_tile_rows(result, m, n, bias, block + 2, y);
    _tile_stored(7, result, 64);
    store_tile_rows(result, m, n, bias, block + 3, y);
  }
  for (; block < end; ++block) {
    const uint16_t* w0 = w + block * block_size;
    _tile_zero(4);
    for (int64_t step = 0; step < steps; ++step) {
      _tile_loadd(0, x + step * kTileDepth, x_stride);
      _tile_loadd(1, w0 + step * kTileDepth * kBlock, 64);
      _tile_dpbf16ps(4, 0, 1);
    }
    _tile_stored(4, result, 64);
    store_tile_rows(result, m, n, bias, block, y);
  }
  _tile_release();
}

// x [..., K] bf16 with 1 to 16 rows, K a multiple of 32; packed from `pack`; bias [N] fp32 or
// none. Needs `tiles_enable()` to have returned true.
at::Tensor gemm_tiles(const at::Tensor& x, const at::Tensor& packed,
                      const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(tiles_enable(), "gemm_tiles: this process may not use AMX tiles");
  check_packed(packed);
  const int64_t n = packed.size(0) * kBlock, k = packed.size(1) * 2;
  TORCH_CHECK(k % kTileDepth == 0, "gemm_tiles: needs in_features a multiple of 32, got ", k);
  const uint16_t* w = bf16_data(packed);
  return linear_rows("gemm_tiles", x, packed, bias, kTileRows,
                     [&](const uint16_t* rows, int64_t m, const float* b, uint16_t* y,
                         int64_t begin, int64_t end) {
                       tile_blocks(rows, m, k, w, n, b, y, begin, end);
                     });
}

// -- a one-row decode step of a Llama model --------------------------------------------------
//
// Every stage rounds to bf16 where transformers' bf16 forward does (after the norm, each
// projection, each rotary product and their sum, silu, the gate product and each residual
// add), so the cache it writes and the logits it returns follow that forward; the attention
// accumulates in fp32 like torch's flash kernel, in its own order.

inline __mmask16 lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

inline __m512 widen(__m256i raw) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

inline __m512 load(const uint16_t* p, __mmask16 mask) {
  return widen(_mm256_maskz_loadu_epi16(mask, p));
}

inline void store(uint16_t* p, __m512 value, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, (__m256i)_mm512_cvtneps_pbh(value));
}

// The value rounded to bf16 (to nearest even) and widened back.
inline __m512 round_bf16(__m512 value) { return widen((__m256i)_mm512_cvtneps_pbh(value)); }

// e^x in fp32 within about one ulp (Cephes' expf polynomial, 2^n by `vscalefps`).
inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// transformers' RMSNorm: fp32 statistics, the normalized row rounded to bf16, times the
// bf16 weight, rounded again.
void rms_norm(const uint16_t* x, const uint16_t* weight, int64_t n, float eps, uint16_t* y) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = load(x + i, lanes(n - i));
    sum = _mm512_fmadd_ps(v, v, sum);
  }
  const float mean = _mm512_reduce_add_ps(sum) / static_cast<float>(n);
  const __m512 scale = _mm512_set1_ps(1.f / std::sqrt(mean + eps));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lanes(n - i);
    const __m512 normed = round_bf16(_mm512_mul_ps(load(x + i, mask), scale));
    store(y + i, _mm512_mul_ps(load(weight + i, mask), normed), mask);
  }
}

// y = round(a + b) over n bf16 values (a residual add).
void add_rows(const uint16_t* a, const uint16_t* b, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lanes(n - i);
    store(y + i, _mm512_add_ps(load(a + i, mask), load(b + i, mask)), mask);
  }
}

// Llama's rotate-half rotary embedding of one head into `out`; `turned` is scratch of dim.
void rotate(const uint16_t* head, const uint16_t* cos, const uint16_t* sin, int64_t dim,
            uint16_t* turned, uint16_t* out) {
  const int64_t half = dim / 2;
  for (int64_t d = 0; d < half; ++d) {
    turned[d] = head[d + half] ^ 0x8000;  // exact negation
    turned[d + half] = head[d];
  }
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = lanes(dim - d);
    const __m512 a = round_bf16(_mm512_mul_ps(load(head + d, mask), load(cos + d, mask)));
    const __m512 b = round_bf16(_mm512_mul_ps(load(turned + d, mask), load(sin + d, mask)));
    store(out + d, _mm512_add_ps(a, b), mask);
  }
}

// act = round(round(silu(gate)) * up) over n values.
void silu_times(const uint16_t* gate, const uint16_t* up, int64_t n, uint16_t* act) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lanes(n - i);
    const __m512 g = load(gate + i, mask);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = round_bf16(_mm512_div_ps(g, _mm512_add_ps(one, e)));
    store(act + i, _mm512_mul_ps(silu, load(up + i, mask)), mask);
  }
}

inline float dot(const float* q, const uint16_t* key, int64_t dim) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = lanes(dim - d);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q + d), load(key + d, mask), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// One query head over `positions` keys and values: the first `cached` from the cache rows
// (`row_stride` apart), the last one `new_key` / `new_value`; the result rounded to bf16.
void attend(const uint16_t* query, const uint16_t* keys, const uint16_t* values,
            int64_t row_stride, int64_t cached, const uint16_t* new_key,
            const uint16_t* new_value, int64_t dim, float scaling, float* q, float* scores,
            float* acc, uint16_t* out) {
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = lanes(dim - d);
    _mm512_mask_storeu_ps(q + d, mask, load(query + d, mask));
  }
  const int64_t positions = cached + 1;
  float top = -INFINITY;
  for (int64_t j = 0; j < positions; ++j) {
    const uint16_t* key = j < cached ? keys + j * row_stride : new_key;
    scores[j] = dot(q, key, dim) * scaling;
    top = std::max(top, scores[j]);
  }
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < positions; j += 16) {
    const __mmask16 mask = lanes(positions - j);
    const __m512 s = _mm512_maskz_loadu_ps(mask, scores + j);
    const __m512 e = _mm512_maskz_mov_ps(mask, exp_ps(_mm512_sub_ps(s, _mm512_set1_ps(top))));
    _mm512_mask_storeu_ps(scores + j, mask, e);
    total = _mm512_add_ps(total, e);
  }
  std::fill(acc, acc + dim, 0.f);
  for (int64_t j = 0; j < positions; ++j) {
    const uint16_t* value = j < cached ? values + j * row_stride : new_value;
    const __m512 weight = _mm512_set1_ps(scores[j]);
    for (int64_t d = 0; d < dim; d += 16) {
      const __mmask16 mask = lanes(dim - d);
      const __m512 sum = _mm512_fmadd_ps(weight, load(value + d, mask),
                                         _mm512_maskz_loadu_ps(mask, acc + d));
      _mm512_mask_storeu_ps(acc + d, mask, sum);
    }
  }
  const __m512 inverse = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(total));
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = lanes(dim - d);
    store(out + d, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, acc + d), inverse), mask);
  }
}

// gate_up [..., 2 * inner] bf16 -> silu(gate) * up [..., inner], rounded as `decode_row` does.
at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.scalar_type() == at::kBFloat16 && gate_up.dim() >= 1 &&
                  gate_up.size(-1) % 2 == 0,
              "silu_mul: needs a bfloat16 tensor with an even last dimension");
  const int64_t inner = gate_up.size(-1) / 2;
  const at::Tensor rows = gate_up.reshape({-1, 2 * inner}).contiguous();
  std::vector<int64_t> shape = gate_up.sizes().vec();
  shape.back() = inner;
  at::Tensor out = at::empty(shape, gate_up.options());
  auto* y = reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>());
  for (int64_t r = 0; r < rows.size(0); ++r) {
    const uint16_t* row = bf16_data(rows) + r * 2 * inner;
    silu_times(row, row + inner, inner, y + r * inner);
  }
  return out;
}

using Biases = c10::List<std::optional<at::Tensor>>;

const float* bias_at(const Biases& biases, size_t layer, int64_t n) {
  return bias_data(biases.get(layer), n);
}

// hidden [1, 1, width] bf16 (the embedded token) -> logits [1, 1, vocab] bf16. Writes each
// layer's new key (rotated) and value at `length` of its cache [1, key_heads, capacity, dim].
at::Tensor decode_row(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                      at::TensorList key_caches, at::TensorList value_caches, int64_t length,
                      at::TensorList norms_in, at::TensorList norms_mid, double eps,
                      at::TensorList qkv, const Biases& qkv_bias, at::TensorList out_proj,
                      const Biases& out_bias, at::TensorList gate_up, const Biases& gate_up_bias,
                      at::TensorList down, const Biases& down_bias, const at::Tensor& final_norm,
                      double final_eps, const at::Tensor& head,
                      const std::optional<at::Tensor>& head_bias, int64_t query_heads,
                      int64_t key_heads, double scaling) {
  const size_t layers = qkv.size();
  TORCH_CHECK(layers > 0 && key_caches.size() == layers && value_caches.size() == layers &&
                  norms_in.size() == layers && norms_mid.size() == layers &&
                  out_proj.size() == layers && gate_up.size() == layers &&
                  down.size() == layers && qkv_bias.size() == layers &&
                  out_bias.size() == layers && gate_up_bias.size() == layers &&
                  down_bias.size() == layers,
              "decode_row: every per-layer list needs one entry per layer");
  const int64_t width = hidden.size(-1), dim = key_caches[0].size(3);
  const int64_t heads_width = (query_heads + 2 * key_heads) * dim;
  TORCH_CHECK(hidden.scalar_type() == at::kBFloat16 && hidden.numel() == width,
              "decode_row: hidden must be one bfloat16 row");
  TORCH_CHECK(query_heads > 0 && key_heads > 0 && query_heads % key_heads == 0 && dim % 2 == 0 &&
                  cos.numel() == dim && sin.numel() == dim && cos.scalar_type() == at::kBFloat16 &&
                  sin.scalar_type() == at::kBFloat16,
              "decode_row: cos and sin must be bfloat16 rows of the head size");
  check_packed(head);
  TORCH_CHECK(head.size(1) * 2 == width && final_norm.numel() == width &&
                  final_norm.scalar_type() == at::kBFloat16 && final_norm.is_contiguous(),
              "decode_row: the final norm and the head do not fit the hidden size");
  const int64_t inner = gate_up[0].size(0) * kBlock / 2;
  // Each layer's checked bias pointers (qkv, out, gate_up, down; null for none), read once.
  std::vector<std::array<const float*, 4>> biases(layers);
  for (size_t i = 0; i < layers; ++i) {
    for (const auto* packed : {&qkv[i], &out_proj[i], &gate_up[i], &down[i]}) check_packed(*packed);
    const at::Tensor &keys = key_caches[i], &values = value_caches[i];
    TORCH_CHECK(keys.scalar_type() == at::kBFloat16 && keys.dim() == 4 && keys.size(0) == 1 &&
                    keys.size(1) == key_heads && keys.size(3) == dim && keys.stride(3) == 1 &&
                    values.sizes() == keys.sizes() && values.strides() == keys.strides(),
                "decode_row: the caches must be [1, key_heads, capacity, dim] bfloat16");
    TORCH_CHECK(length >= 0 && length < keys.size(2), "decode_row: no room in the cache");
    TORCH_CHECK(qkv[i].size(0) * kBlock == heads_width && qkv[i].size(1) * 2 == width &&
                    out_proj[i].size(1) * 2 == query_heads * dim &&
                    out_proj[i].size(0) * kBlock == width && gate_up[i].size(1) * 2 == width &&
                    gate_up[i].size(0) * kBlock == 2 * inner && down[i].size(0) * kBlock == width &&
                    down[i].size(1) * 2 == inner,
                "decode_row: the weights of layer ", i, " do not fit the layer's shapes");
    for (const auto* norm : {&norms_in[i], &norms_mid[i]}) {
      TORCH_CHECK(norm->scalar_type() == at::kBFloat16 && norm->numel() == width &&
                      norm->is_contiguous(),
                  "decode_row: the norms must be contiguous bfloat16 rows of the hidden size");
    }
    biases[i] = {bias_at(qkv_bias, i, heads_width), bias_at(out_bias, i, width),
                 bias_at(gate_up_bias, i, 2 * inner), bias_at(down_bias, i, width)};
  }
  const int64_t vocab = head.size(0) * kBlock;
  const float* vocab_bias = bias_data(head_bias, vocab);
  const at::Tensor h = hidden.contiguous(), c = cos.contiguous(), s = sin.contiguous();
  at::Tensor logits = at::empty({1, 1, vocab}, hidden.options());
  auto* logit_data = reinterpret_cast<uint16_t*>(logits.mutable_data_ptr<at::BFloat16>());
  // Written by a share of the threads, read by all after a barrier.
  std::vector<uint16_t> heads(heads_width), attended(query_heads * dim), projected(width),
      gated(2 * inner);
  const int64_t group = query_heads / key_heads;
  const int threads = std::max(1, at::get_num_threads());
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
    // This thread's own copies of the row's state.
    std::vector<uint16_t> x(bf16_data(h), bf16_data(h) + width), mid(width), normed(width),
        act(inner), new_keys(key_heads * dim), query(dim), turned(dim);
    std::vector<float> q(dim), scores(length + 1), acc(dim);
    const auto [head_begin, head_end] = share(query_heads, thread, team);
    for (size_t i = 0; i < layers; ++i) {
      rms_norm(x.data(), bf16_data(norms_in[i]), width, static_cast<float>(eps), normed.data());
      auto [begin, end] = share(qkv[i].size(0), thread, team);
      gemv_range(normed.data(), 1, qkv[i], biases[i][0], heads.data(), begin,
                 end);
#pragma omp barrier
      for (int64_t g = 0; g < key_heads; ++g) {
        rotate(heads.data() + (query_heads + g) * dim, bf16_data(c), bf16_data(s), dim,
               turned.data(), new_keys.data() + g * dim);
      }
      auto* keys = reinterpret_cast<uint16_t*>(key_caches[i].data_ptr<at::BFloat16>());
      auto* values = reinterpret_cast<uint16_t*>(value_caches[i].data_ptr<at::BFloat16>());
      const int64_t head_stride = key_caches[i].stride(1), row_stride = key_caches[i].stride(2);
      for (int64_t qh = head_begin; qh < head_end; ++qh) {
        const int64_t g = qh / group;
        rotate(heads.data() + qh * dim, bf16_data(c), bf16_data(s), dim, turned.data(),
               query.data());
        attend(query.data(), keys + g * head_stride, values + g * head_stride, row_stride, length,
               new_keys.data() + g * dim, heads.data() + (query_heads + key_heads + g) * dim, dim,
               static_cast<float>(scaling), q.data(), scores.data(), acc.data(),
               attended.data() + qh * dim);
      }
      if (thread == 0) {  // no thread reads position `length` from the cache in this step
        for (int64_t g = 0; g < key_heads; ++g) {
          std::memcpy(keys + g * head_stride + length * row_stride, new_keys.data() + g * dim,
                      dim * sizeof(uint16_t));
          std::memcpy(values + g * head_stride + length * row_stride,
                      heads.data() + (query_heads + key_heads + g) * dim, dim * sizeof(uint16_t));
        }
      }
#pragma omp barrier
      std::tie(begin, end) = share(out_proj[i].size(0), thread, team);
      gemv_range(attended.data(), 1, out_proj[i], biases[i][1], projected.data(),
                 begin, end);
#pragma omp barrier
      add_rows(x.data(), projected.data(), width, mid.data());
      rms_norm(mid.data(), bf16_data(norms_mid[i]), width, static_cast<float>(eps), normed.data());
      std::tie(begin, end) = share(gate_up[i].size(0), thread, team);
      gemv_range(normed.data(), 1, gate_up[i], biases[i][2], gated.data(),
                 begin, end);
#pragma omp barrier
      silu_times(gated.data(), gated.data() + inner, inner, act.data());
      std::tie(begin, end) = share(down[i].size(0), thread, team);
      gemv_range(act.data(), 1, down[i], biases[i][3], projected.data(), begin,
                 end);
#pragma omp barrier
      add_rows(mid.data(), projected.data(), width, x.data());
    }
    rms_norm(x.data(), bf16_data(final_norm), width, static_cast<float>(final_eps),
             normed.data());
    const auto [begin, end] = share(head.size(0), thread, team);
    gemv_range(normed.data(), 1, head, vocab_bias, logit_data, begin, end);
  }
  return logits;
}

}  // namespace

TORCH_LIBRARY(largeforge_cpu, m) {
  m.def("gemv_pack(Tensor weight) -> Tensor");
  m.def("gemv(Tensor x, Tensor packed, Tensor? bias) -> Tensor");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
  m.def("tiles_enable() -> bool", &tiles_enable);
  m.def("gemm_tiles(Tensor x, Tensor packed, Tensor? bias) -> Tensor");
  m.def(
      "decode_row(Tensor hidden, Tensor cos, Tensor sin, Tensor(a!)[] key_caches, "
      "Tensor(b!)[] value_caches, int length, Tensor[] norms_in, Tensor[] norms_mid, float eps, "
      "Tensor[] qkv, Tensor?[] qkv_bias, Tensor[] out_proj, Tensor?[] out_bias, "
      "Tensor[] gate_up, Tensor?[] gate_up_bias, Tensor[] down, Tensor?[] down_bias, "
      "Tensor final_norm, float final_eps, Tensor head, Tensor? head_bias, int query_heads, "
      "int key_heads, float scaling) -> Tensor");
}

TORCH_LIBRARY_IMPL(largeforge_cpu, CPU, m) {
  m.impl("gemv_pack", &pack);
  m.impl("gemv", &gemv);
  m.impl("silu_mul", &silu_mul);
  m.impl("gemm_tiles", &gemm_tiles);
  m.impl("decode_row", &decode_row);
}
