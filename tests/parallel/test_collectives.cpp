// The MPI communicator's all-gather and reduce-scatter, out of place and in place (the
// forms ZeRO-1 uses: the rank's own block of the full buffer is the send or the receive
// buffer), synchronous and non-blocking, against sums computed here. MPI forbids aliased
// buffers, so the in-place forms must go through MPI_IN_PLACE and, for reduce-scatter,
// move the result from the buffer's start to the rank's block.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "parallel/communicator.h"

namespace braid {
namespace {

// Element i of rank r's contribution: distinct per rank and element, exact in fp32.
float value(int r, int64_t i) { return float(r * 1000 + i % 997) + 0.25f; }

class Collectives : public ::testing::Test {
 protected:
  void SetUp() override {
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    comm = std::make_unique<MpiCommunicator>(c, "world");
    rank = comm->rank();
    size = comm->size();
  }
  std::unique_ptr<MpiCommunicator> comm;
  int rank = 0, size = 1;
  static constexpr int64_t kCount = 1001;  // odd: block boundaries off any alignment
};

TEST_F(Collectives, AllGatherOutOfPlaceAndInPlace) {
  std::vector<float> send(kCount), out(size_t(size * kCount), -1.f), inplace(size_t(size * kCount), -1.f);
  for (int64_t i = 0; i < kCount; ++i) send[size_t(i)] = inplace[size_t(rank * kCount + i)] = value(rank, i);
  comm->all_gather(send.data(), out.data(), kCount, DType::F32);
  comm->all_gather(inplace.data() + rank * kCount, inplace.data(), kCount, DType::F32);
  for (int r = 0; r < size; ++r)
    for (int64_t i = 0; i < kCount; ++i) {
      ASSERT_EQ(out[size_t(r * kCount + i)], value(r, i)) << "rank block " << r << " element " << i;
      ASSERT_EQ(inplace[size_t(r * kCount + i)], value(r, i)) << "in place: rank block " << r << " element " << i;
    }
}

TEST_F(Collectives, ReduceScatterOutOfPlaceInPlaceAndAsync) {
  // Expected block of this rank: the sum over ranks of their elements at rank*kCount + i.
  // Summation order may differ between forms; the values are small integers + 0.25 x size,
  // exact in fp32, so every form must give exactly the same numbers.
  std::vector<float> want(kCount, 0.f);
  for (int r = 0; r < size; ++r)
    for (int64_t i = 0; i < kCount; ++i) want[size_t(i)] += value(r, rank * kCount + i);
  auto full = [&] {
    std::vector<float> f(size_t(size * kCount));
    for (int64_t i = 0; i < size * kCount; ++i) f[size_t(i)] = value(rank, i);
    return f;
  };
  std::vector<float> send = full(), out(kCount, -1.f);
  comm->reduce_scatter(send.data(), out.data(), kCount, DType::F32);
  std::vector<float> a = full();
  comm->reduce_scatter(a.data(), a.data() + rank * kCount, kCount, DType::F32);
  std::vector<float> b = full();
  auto req = comm->reduce_scatter_async(b.data(), b.data() + rank * kCount, kCount, DType::F32);
  req->wait();
  std::vector<float> c = full();
  {  // destroyed without wait(): completion must still put the block in place
    auto r2 = comm->reduce_scatter_async(c.data(), c.data() + rank * kCount, kCount, DType::F32);
  }
  for (int64_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(out[size_t(i)], want[size_t(i)]) << "out of place, element " << i;
    ASSERT_EQ(a[size_t(rank * kCount + i)], want[size_t(i)]) << "in place, element " << i;
    ASSERT_EQ(b[size_t(rank * kCount + i)], want[size_t(i)]) << "in place async, element " << i;
    ASSERT_EQ(c[size_t(rank * kCount + i)], want[size_t(i)]) << "in place async, no wait, element " << i;
  }
}

}  // namespace
}  // namespace braid
