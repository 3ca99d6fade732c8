// The kill storm's messages: payload sizes (many span a channel's 64 KiB blocks), contents
// and the checksum each message carries of its id and payload.
#include "kill_storm/storm.hpp"

namespace kill_storm {

std::size_t payload_size(u32 queue, u64 id) {
  const u64 r = mix(id ^ 0x5eed);
  if (queue == 2) return 1 + r % 160;
  const u64 pick = r % 100;
  const u64 more = r >> 8;
  if (pick < 55) return 1 + more % 256;
  if (pick < 90) return 257 + more % (16 << 10);
  return (64 << 10) + 1 + more % (192 << 10);  // spans two to five blocks
}

u64 checksum(u64 id, const u8* data, std::size_t n) {
  u64 h = mix(id ^ (n << 20));
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    u64 w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ data[i]) * 0x100000001b3ULL;
  return mix(h);
}

void fill_payload(u64 id, std::vector<u8>& out, std::size_t n) {
  out.resize(n);
  u64 s = mix(id);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const u64 w = s ^ (s >> 29);
    std::memcpy(out.data() + i, &w, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<u8>(mix(s + i));
}

}  // namespace kill_storm
