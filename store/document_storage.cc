// The pooled storage of documents' node and byte arrays (Document's
// allocator, declared in document.h).
#include <array>
#include <bit>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <new>

#include "store/document.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace canopy {

namespace {

// Size classes: 64 bytes, then four a power of two (1.25, 1.5, 1.75 and 2
// times the one below), up to kMaxPooled; larger blocks come from the heap.
constexpr size_t kMinBlock = 64;
constexpr size_t kMaxPooled = size_t{1} << 20;
constexpr size_t kSlabBytes = size_t{4} << 20;

struct SizeClass {
  size_t index;
  size_t bytes;
};

SizeClass size_class(size_t bytes) {
  if (bytes <= kMinBlock) return {0, kMinBlock};
  const int k = std::bit_width(bytes - 1);  // 2^k >= bytes > 2^(k-1)
  const size_t base = size_t{1} << (k - 1);
  const size_t step = base / 4;
  const size_t m = (bytes - base + step - 1) / step;  // 1..4
  return {static_cast<size_t>(k - 7) * 4 + m, base + m * step};
}

SizeClass class_of_index(size_t index) {
  if (index == 0) return {0, kMinBlock};
  const size_t base = size_t{1} << ((index - 1) / 4 + 6);
  return {index, base + ((index - 1) % 4 + 1) * (base / 4)};
}

struct StoragePool {
  std::mutex mu;
  std::array<void*, 64> free{};  // per size class, linked through each block's first word
  char* slab = nullptr;
  size_t slab_left = 0;
};

// A slab, from the heap (so that malloc's statistics, which the memory
// benchmarks read, still count documents), aligned to huge pages and advised
// to use them: when the heap maps it fresh, walks over many documents' nodes
// then cost few TLB misses. (On this 2-core VM the gain is within the noise
// of store.merge; the alignment costs at most 2 MiB of address space.)
// The first slab is not advised: a process holding few documents (a
// spoke's cache of 256) would pay a whole huge page of resident memory for
// its first few kilobytes of them.
char* new_slab(bool first) {
  constexpr size_t kHugePage = size_t{2} << 20;
  void* p = ::operator new (kSlabBytes, std::align_val_t{kHugePage});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!first) madvise(p, kSlabBytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  return static_cast<char*>(p);
}

StoragePool& storage_pool() {
  static auto* pool = new StoragePool;  // never destroyed: documents may outlive statics
  return *pool;
}

}  // namespace

// Under AddressSanitizer blocks go to the heap and back, so that it still
// sees every use after release.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kPooled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kPooled = false;
#else
constexpr bool kPooled = true;
#endif
#else
constexpr bool kPooled = true;
#endif

void* document_storage_allocate(size_t bytes) {
  if (!kPooled || bytes > kMaxPooled) return ::operator new(bytes);
  const SizeClass c = size_class(bytes);
  StoragePool& pool = storage_pool();
  std::lock_guard<std::mutex> lock(pool.mu);
  if (void* p = pool.free[c.index]) {
    void* next;
    std::memcpy(&next, p, sizeof next);
    pool.free[c.index] = next;
    return p;
  }
  if (pool.slab_left < c.bytes) {
    // What is left of the slab goes to the free lists, largest class first.
    while (pool.slab_left >= kMinBlock) {
      const SizeClass up = size_class(pool.slab_left);
      const SizeClass fit = up.bytes <= pool.slab_left ? up : class_of_index(up.index - 1);
      std::memcpy(pool.slab, &pool.free[fit.index], sizeof(void*));
      pool.free[fit.index] = pool.slab;
      pool.slab += fit.bytes;
      pool.slab_left -= fit.bytes;
    }
    pool.slab = new_slab(/*first=*/pool.slab == nullptr);
    pool.slab_left = kSlabBytes;
  }
  void* p = pool.slab;
  pool.slab += c.bytes;
  pool.slab_left -= c.bytes;
  return p;
}

void document_storage_release(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (!kPooled || bytes > kMaxPooled) {
    ::operator delete(p);
    return;
  }
  const SizeClass c = size_class(bytes);
  StoragePool& pool = storage_pool();
  std::lock_guard<std::mutex> lock(pool.mu);
  std::memcpy(p, &pool.free[c.index], sizeof(void*));
  pool.free[c.index] = p;
}

}  // namespace canopy
