// Ragged rows on the device: rows of different lengths along axis 1 arrive packed one after another
// (no padding crossed PCIe); `pad_*` spreads them into a dense [rows, max_length, inner] block filled
// with the pad value, and `unpad_*` gathers a dense model output back into the packed form, so only
// real elements cross PCIe on the way back too.
//
// offsets[r] is where row r starts in the packed buffer, in units of `inner` elements (offsets has
// rows + 1 entries; row r's length is offsets[r + 1] - offsets[r]). Element types are moved as their
// bit patterns, so one kernel per element size serves every dtype.
//
// Grid: x = row, y = slices of the row (grid-stride over max_length * inner elements).

template <typename T>
__device__ __forceinline__ void pad_row(const T* __restrict__ packed, const long long* __restrict__ offsets,
                                        T* __restrict__ dense, T pad, long long max_length, long long inner) {
    const long long row = blockIdx.x;
    const long long start = offsets[row] * inner;
    const long long filled = (offsets[row + 1] - offsets[row]) * inner;
    const long long width = max_length * inner;
    T* out = dense + row * width;
    const long long step = (long long)gridDim.y * blockDim.x;
    for (long long i = (long long)blockIdx.y * blockDim.x + threadIdx.x; i < width; i += step) {
        out[i] = i < filled ? packed[start + i] : pad;
    }
}

template <typename T>
__device__ __forceinline__ void unpad_row(const T* __restrict__ dense, const long long* __restrict__ offsets,
                                          T* __restrict__ packed, long long max_length, long long inner) {
    const long long row = blockIdx.x;
    const long long start = offsets[row] * inner;
    const long long filled = (offsets[row + 1] - offsets[row]) * inner;
    const T* in = dense + row * max_length * inner;
    const long long step = (long long)gridDim.y * blockDim.x;
    for (long long i = (long long)blockIdx.y * blockDim.x + threadIdx.x; i < filled; i += step) {
        packed[start + i] = in[i];
    }
}

#define RAGGED_KERNELS(SUFFIX, T)                                                                            \
    extern "C" __global__ void pad_##SUFFIX(const T* packed, const long long* offsets, T* dense, T pad,       \
                                            long long max_length, long long inner) {                         \
        pad_row<T>(packed, offsets, dense, pad, max_length, inner);                                          \
    }                                                                                                        \
    extern "C" __global__ void unpad_##SUFFIX(const T* dense, const long long* offsets, T* packed,           \
                                              long long max_length, long long inner) {                       \
        unpad_row<T>(dense, offsets, packed, max_length, inner);                                             \
    }

RAGGED_KERNELS(b1, unsigned char)
RAGGED_KERNELS(b2, unsigned short)
RAGGED_KERNELS(b4, unsigned int)
RAGGED_KERNELS(b8, unsigned long long)
