// position_runs splits a block of token rows of a [B, T] batch into runs of consecutive
// positions (the sequence-parallel block of a TP rank may start and end inside a sample).
// Checked against the definition row by row: every row of the block is covered once, in
// order, with position = flat row mod T.
#include <gtest/gtest.h>

#include "framework/model_config.h"

namespace braid {
namespace {

TEST(PositionRuns, CoverEveryRowOnceWithItsPosition) {
  for (int T : {1, 5, 16})
    for (int B : {1, 2, 3, 7})
      for (int P : {1, 2, 4, 8}) {
        const int64_t N = int64_t(B) * T;
        if (N % P != 0) continue;
        const int64_t rows = N / P;
        for (int r = 0; r < P; ++r) {
          const int64_t first = r * rows;
          std::vector<int> pos_of_row;
          int whole_runs = 0;
          for (const PositionRun& run : position_runs(first, rows, T)) {
            ASSERT_EQ(run.row, int64_t(pos_of_row.size())) << "runs must be contiguous and in order";
            ASSERT_GE(run.samples, 1);
            if (run.samples > 1 || run.len == T) {
              ASSERT_EQ(run.pos, 0);
              ASSERT_EQ(run.len, T);
              ++whole_runs;
            }
            for (int s = 0; s < run.samples; ++s)
              for (int t = 0; t < run.len; ++t) pos_of_row.push_back(run.pos + t);
          }
          ASSERT_EQ(int64_t(pos_of_row.size()), rows) << "B " << B << " T " << T << " P " << P << " r " << r;
          for (int64_t i = 0; i < rows; ++i)
            ASSERT_EQ(pos_of_row[size_t(i)], int((first + i) % T)) << "row " << first + i;
          EXPECT_LE(whole_runs, 1) << "whole samples are merged into one run";
        }
      }
}

TEST(PositionRuns, ABlockAcrossSamplesSplitsAtTheBoundaries) {
  // B 3, T 4, 2 ranks: rank 1 holds rows 6..11 = positions 2, 3 | 0 1 2 3.
  const auto runs = position_runs(6, 6, 4);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].row, 0);
  EXPECT_EQ(runs[0].pos, 2);
  EXPECT_EQ(runs[0].len, 2);
  EXPECT_EQ(runs[1].row, 2);
  EXPECT_EQ(runs[1].samples, 1);
  EXPECT_EQ(runs[1].len, 4);
  EXPECT_EQ(runs[1].pos, 0);
}

}  // namespace
}  // namespace braid
