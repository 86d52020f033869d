// Top-k per row on the device, so only k values and k indices per row cross PCIe.
//
// One block per row. The order is the NumPy reference's: larger first, NaN after every number, ties
// (and NaNs) by lower index; values compare as doubles, as the reference sorts float64 copies. That
// order is total, so the i-th pick is simply the best element strictly after the (i-1)-th pick: each
// round every thread scans its share of the row, the block reduces to one winner in shared memory, and
// no list of taken indices is kept. Cost is k passes over the row, fine for the k a client asks for.

#define TOPK_THREADS 256

__device__ __forceinline__ bool comes_before(double a, long long ia, double b, long long ib) {
    const bool na = isnan(a), nb = isnan(b);
    if (na != nb) return nb;
    if (!na && a != b) return a > b;
    return ia < ib;
}

__device__ __forceinline__ double as_double(float v) { return (double)v; }
__device__ __forceinline__ double as_double(double v) { return v; }
__device__ __forceinline__ double as_double(int v) { return (double)v; }
__device__ __forceinline__ double as_double(long long v) { return (double)v; }
__device__ __forceinline__ double as_double(unsigned short half_bits) {  // FP16 as its bit pattern
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(half_bits));
    return (double)f;
}

template <typename T>
__device__ __forceinline__ void topk_row(const T* __restrict__ values, long long columns, int k,
                                         T* __restrict__ out_values, long long* __restrict__ out_index) {
    __shared__ double best_value[TOPK_THREADS];
    __shared__ long long best_index[TOPK_THREADS];
    const long long row = blockIdx.x;
    const T* in = values + row * columns;
    double last_value = 0.0;
    long long last_index = -1;  // -1: nothing picked yet
    for (int pick = 0; pick < k; ++pick) {
        double mine = 0.0;
        long long mine_index = -1;
        for (long long j = threadIdx.x; j < columns; j += blockDim.x) {
            const double v = as_double(in[j]);
            if (last_index >= 0 && !comes_before(last_value, last_index, v, j)) continue;
            if (mine_index < 0 || comes_before(v, j, mine, mine_index)) {
                mine = v;
                mine_index = j;
            }
        }
        best_value[threadIdx.x] = mine;
        best_index[threadIdx.x] = mine_index;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) {
                const long long other = best_index[threadIdx.x + half];
                if (other >= 0 && (best_index[threadIdx.x] < 0 ||
                                   comes_before(best_value[threadIdx.x + half], other,
                                                best_value[threadIdx.x], best_index[threadIdx.x]))) {
                    best_value[threadIdx.x] = best_value[threadIdx.x + half];
                    best_index[threadIdx.x] = other;
                }
            }
            __syncthreads();
        }
        last_value = best_value[0];
        last_index = best_index[0];
        if (threadIdx.x == 0) {
            out_values[row * k + pick] = in[last_index];
            out_index[row * k + pick] = last_index;
        }
        __syncthreads();  // everyone has read best_*[0] before the next round overwrites it
    }
}

#define TOPK_KERNEL(SUFFIX, T)                                                                          \
    extern "C" __global__ void topk_##SUFFIX(const T* values, long long columns, int k, T* out_values,   \
                                             long long* out_index) {                                     \
        topk_row<T>(values, columns, k, out_values, out_index);                                          \
    }

TOPK_KERNEL(f16, unsigned short)
TOPK_KERNEL(f32, float)
TOPK_KERNEL(f64, double)
TOPK_KERNEL(i32, int)
TOPK_KERNEL(i64, long long)
